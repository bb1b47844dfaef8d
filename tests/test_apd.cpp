// APD (METHODS 2): attributions against brute force, batch top-k edge cases, float64
// finite-difference checks of every APD loss term, the unit-norm A step, configs, resume with
// the same bits, pd audit on the shipped configs, and a TMS 5-2 recovery run.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "autodiff/gradcheck.hpp"
#include "autodiff/parallel.hpp"
#include "decomp/apd.hpp"
#include "decomp/attributions.hpp"
#include "decomp/evaluate.hpp"
#include "decomp/losses/losses.hpp"
#include "decomp/run/audit.hpp"
#include "decomp/run/checkpoint.hpp"
#include "decomp/trainer.hpp"
#include "tests/audit.hpp"
#include "tests/spd_test_util.hpp"

using ad::Tensor;

namespace {

nlohmann::json apd_config(int64_t C, int64_t m, double topk, const std::string& attribution = "gradient") {
  nlohmann::json j = nlohmann::json::parse(R"({
    "method": "apd", "seed": 3,
    "losses": [{"name": "faithfulness", "coeff": 1}, {"name": "minimality", "coeff": 1},
               {"name": "simplicity", "coeff": 0.7, "p": 0.9}],
    "train": {"steps": 30, "batch_size": 64, "lr": 3e-3, "schedule": "cosine", "log_every": 7}
  })");
  j["C"] = C, j["m"] = m, j["topk"] = topk, j["attribution"] = attribution;
  return j;
}

// Gives every component tensor random values (a generic point: no ties in the attributions).
void randomise(decomp::APD& apd, uint64_t seed) {
  ad::Rng r(seed);
  for (Tensor& p : apd.all_params()) ad::fill_uniform(p, -0.8, 0.8, r);
}

// The target's weight matrices as leaves, in layer order, and its forward written out:
// h = x W1^T, (h = h I^T), y = ReLU(h WT^T + b).
struct ExplicitTMS {
  std::vector<Tensor> W;  // [d_out, d_in] per layer
  Tensor b;
  explicit ExplicitTMS(const spd_test::TinyTMS& t) : b(t.b) {
    W.push_back(ad::clone(t.W));
    if (t.identity) W.push_back(ad::clone(t.I));
    W.push_back(ad::clone(t.WT));
    for (Tensor& w : W) w.requires_grad_(true);
  }
  Tensor forward(const Tensor& x, const std::vector<Tensor>& weights) const {
    Tensor h = x;
    for (size_t l = 0; l + 1 < weights.size(); ++l) h = ad::linear(h, weights[l]);
    return ad::relu(ad::linear(h, weights.back(), b));
  }
};

// P_{c,l} in the weight's orientation [d_out, d_in] = (V_c U_c)^T, from the component model.
std::vector<std::vector<double>> component_weights(const decomp::APD& apd, int l) {
  const decomp::LayerComponents& L = apd.cm.layers[(size_t)l];
  const decomp::LayerComponents& src = L.tied_src >= 0 ? apd.cm.layers[(size_t)L.tied_src] : L;
  const int64_t m = apd.m();
  std::vector<std::vector<double>> P((size_t)apd.C(), std::vector<double>((size_t)(L.d_out * L.d_in), 0.0));
  for (int64_t c = 0; c < apd.C(); ++c)
    for (int64_t k = c * m; k < (c + 1) * m; ++k)
      for (int64_t i = 0; i < L.d_in; ++i)
        for (int64_t o = 0; o < L.d_out; ++o) {
          // untied: V [d_in, Cm], U [Cm, d_out]; tied: V = U_src^T, U = V_src^T
          const double v = L.tied_src >= 0 ? src.U.item(k * src.d_out + i) : L.V.item(i * L.C + k);
          const double u = L.tied_src >= 0 ? src.V.item(o * src.C + k) : L.U.item(k * L.d_out + o);
          P[(size_t)c][(size_t)(o * L.d_in + i)] += v * u;
        }
  return P;
}

}  // namespace

TEST_CASE("apd: gradient attributions equal the brute-force sum over dy_o/dW_l . P_{c,l}; activation and ablation too") {
  for (bool identity : {false, true}) {
    CAPTURE(identity);
    spd_test::TinyTMS tms(5, 3, identity, ad::DType::f64);
    decomp::Target tgt = tms.target();
    const decomp::DecompConfig cfg = decomp::parse_decomp_config(apd_config(4, 2, 0.5), "test");
    ad::Rng rng(1);
    decomp::APD apd(tgt, cfg, rng);
    randomise(apd, 7);
    ad::Rng data(5);
    decomp::Batch b = tgt.sample(6, data);
    for (int64_t i = 0; i < b.x.numel(); ++i) b.x.set_item(i, b.x.item(i) + 0.3 * data.uniform());  // dense rows
    decomp::StepState st = apd.prepare(b, data);
    REQUIRE(st.attributions.shape() == ad::Shape({6, 4}));
    const int nl = (int)apd.cm.layers.size();
    std::vector<std::vector<std::vector<double>>> P;
    for (int l = 0; l < nl; ++l) P.push_back(component_weights(apd, l));
    ExplicitTMS ex(tms);
    std::vector<Tensor> summed;  // sum_c P_{c,l} as layer weights (leaves)
    for (int l = 0; l < nl; ++l) {
      const decomp::LayerComponents& L = apd.cm.layers[(size_t)l];
      Tensor w = ad::zeros({L.d_out, L.d_in}, ad::DType::f64);
      for (int64_t c = 0; c < 4; ++c)
        for (int64_t i = 0; i < w.numel(); ++i) w.set_item(i, w.item(i) + P[(size_t)l][(size_t)c][(size_t)i]);
      summed.push_back(w.requires_grad_(true));
    }
    // attr[r][c] = sum_o (sum_l <dy_o/dW_l, P_{c,l}>)^2 with explicit per-row, per-output gradients
    auto brute_force = [&](const std::vector<Tensor>& weights, const Tensor& got) {
      double max_rel = 0;
      for (int64_t r = 0; r < 6; ++r) {
        const Tensor y = ex.forward(ad::slice(b.x, 0, r, r + 1), weights);
        std::vector<double> attr(4, 0.0);
        for (int64_t o = 0; o < y.size(1); ++o) {
          const std::vector<Tensor> dW = ad::grad(ad::slice(y, 1, o, o + 1), weights, ad::ones({1, 1}, ad::DType::f64));
          for (int64_t c = 0; c < 4; ++c) {
            double s = 0;
            for (int l = 0; l < nl; ++l)
              for (int64_t i = 0; i < dW[(size_t)l].numel(); ++i) s += dW[(size_t)l].item(i) * P[(size_t)l][(size_t)c][(size_t)i];
            attr[(size_t)c] += s * s;
          }
        }
        for (int64_t c = 0; c < 4; ++c)
          max_rel = std::max(max_rel, std::abs(got.item(r * 4 + c) - attr[(size_t)c]) / std::max(1e-12, std::abs(attr[(size_t)c])));
      }
      return max_rel;
    };
    const double target_err = brute_force(ex.W, st.attributions);  // the rows-innermost path at these sizes
    const double gemm_err = brute_force(ex.W, decomp::gradient_attributions(apd, b, st, 1));
    CHECK(gemm_err < 1e-10);
    decomp::APD& mut = apd;
    mut.cfg.apd.attribute_apd_model = true;  // the APD model's own gradients and layer inputs
    const double apd_err = std::max(brute_force(summed, decomp::gradient_attributions(apd, b, st, 0)),
                                    brute_force(summed, decomp::gradient_attributions(apd, b, st, 1)));
    mut.cfg.apd.attribute_apd_model = false;
    MESSAGE("gradient attributions vs brute force: max rel err " << target_err << " (target), " << apd_err << " (APD model)");
    CHECK(target_err < 1e-10);
    CHECK(apd_err < 1e-10);

    // activation: sum_l ||a_l P_{c,l}||^2; ablation: squared output change with c dropped
    const Tensor act = decomp::activation_attributions(apd, st), abl = decomp::ablation_attributions(apd, b, st);
    double act_err = 0, abl_err = 0;
    const Tensor full = ex.forward(b.x, summed);
    for (int64_t c = 0; c < 4; ++c) {
      std::vector<Tensor> drop = summed;
      for (int l = 0; l < nl; ++l) {
        drop[(size_t)l] = ad::clone(summed[(size_t)l]);
        for (int64_t i = 0; i < drop[(size_t)l].numel(); ++i)
          drop[(size_t)l].set_item(i, drop[(size_t)l].item(i) - P[(size_t)l][(size_t)c][(size_t)i]);
      }
      const Tensor out = ex.forward(b.x, drop);
      for (int64_t r = 0; r < 6; ++r) {
        double a = 0, d = 0;
        for (int l = 0; l < nl; ++l) {
          const decomp::LayerComponents& L = apd.cm.layers[(size_t)l];
          for (int64_t o = 0; o < L.d_out; ++o) {
            double s = 0;
            for (int64_t i = 0; i < L.d_in; ++i) s += st.inputs[(size_t)l].item(r * L.d_in + i) * P[(size_t)l][(size_t)c][(size_t)(o * L.d_in + i)];
            a += s * s;
          }
        }
        for (int64_t o = 0; o < full.size(1); ++o) d += std::pow(full.item(r * full.size(1) + o) - out.item(r * full.size(1) + o), 2);
        act_err = std::max(act_err, std::abs(act.item(r * 4 + c) - a) / std::max(1e-12, a));
        abl_err = std::max(abl_err, std::abs(abl.item(r * 4 + c) - d) / std::max(1e-12, d));
      }
    }
    CHECK(act_err < 1e-10);
    CHECK(abl_err < 1e-10);
  }
}

TEST_CASE("apd: batch top-k keeps floor(topk B) of the [B, C] attributions; K = 0, K >= B C and ties as documented") {
  CHECK(decomp::batch_topk_k(0.211, 2048, 5) == 432);
  CHECK(decomp::batch_topk_k(0.0, 100, 5) == 0);
  CHECK(decomp::batch_topk_k(5.0, 10, 5) == 50);
  CHECK(decomp::batch_topk_k(7.5, 10, 5) == 50);  // more than B C: every component kept
  CHECK_THROWS_WITH(decomp::batch_topk_k(-1, 10, 5), doctest::Contains("topk"));
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f64);
  decomp::Target tgt = tms.target();
  ad::Rng data(2);
  const decomp::Batch b = tgt.sample(8, data);
  for (double topk : {0.0, 0.5, 1.25, 100.0}) {
    CAPTURE(topk);
    ad::Rng rng(1);
    decomp::APD apd(tgt, decomp::parse_decomp_config(apd_config(3, 2, topk), "test"), rng);
    randomise(apd, 9);
    const decomp::StepState st = apd.prepare(b, data);
    const int64_t K = decomp::batch_topk_k(topk, 8, 3);
    double kept = 0, min_kept = 1e300, max_dropped = -1;
    for (int64_t i = 0; i < 24; ++i) {
      kept += st.topk.item(i);
      if (st.topk.item(i) == 1) min_kept = std::min(min_kept, st.attributions.item(i));
      else max_dropped = std::max(max_dropped, st.attributions.item(i));
    }
    CHECK(kept == (double)K);
    if (K > 0 && K < 24) CHECK(min_kept >= max_dropped);
    // the columns mask repeats s over each component's m columns, and every layer sees it
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t k = 0; k < 6; ++k) CHECK(st.topk_columns.item(r * 6 + k) == st.topk.item(r * 3 + k / 2));
    CHECK(st.g_lower.size() == 2);
  }
  // ties: zero components give all-zero attributions; top-k keeps the lowest flat indices
  ad::Rng rng(1);
  decomp::APD zero(tgt, decomp::parse_decomp_config(apd_config(3, 2, 0.5), "test"), rng);
  for (Tensor& p : zero.all_params()) ad::fill_uniform(p, 0.0, 0.0, rng);
  const decomp::StepState st = zero.prepare(b, data);
  for (int64_t i = 0; i < 24; ++i) CHECK(st.topk.item(i) == (i < 4 ? 1.0 : 0.0));
}

TEST_CASE("apd: float64 finite-difference check of every APD loss term (tied layer: one tensor used twice)") {
  spd_test::TinyTMS tms(5, 3, true, ad::DType::f64);
  decomp::Target tgt = tms.target();
  nlohmann::json j = apd_config(4, 2, 1.5);
  j["losses"].push_back({{"name", "act_recon"}, {"coeff", 0.5}, {"layers", {"hidden_layers.0", "linear2"}}});
  j["losses"].push_back({{"name", "unmasked_recon"}, {"coeff", 0.3}});
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  ad::Rng rng(1);
  decomp::APD apd(tgt, cfg, rng);
  randomise(apd, 11);
  ad::Rng data(4);
  const decomp::Batch b = tgt.sample(7, data);
  // the top-k mask is fixed at the audited point (it is piecewise constant in the parameters)
  const decomp::StepState st0 = apd.prepare(b, data);
  for (const auto& term : cfg.losses) {
    CAPTURE(term->kind);
    auto f = [&](const std::vector<Tensor>&) {
      decomp::StepState st = apd.prepare(b, data);
      for (int64_t i = 0; i < st.topk.numel(); ++i) REQUIRE(st.topk.item(i) == st0.topk.item(i));
      return apd.term(*term, b, st, 0.5, data);
    };
    ad::GradcheckOptions o;
    o.max_coords_per_input = 12;
    const ad::GradcheckResult r = ad::gradcheck(f, apd.all_params(), o);
    CHECK_MESSAGE(r.ok, r.report);
  }
}

TEST_CASE("apd: unit-norm A columns, and the gradient along each column is removed before the step") {
  spd_test::TinyTMS tms(5, 3, false, ad::DType::f64);
  decomp::Target tgt = tms.target();
  nlohmann::json j = apd_config(3, 2, 1.0);
  j["unit_norm_A"] = true;
  ad::Rng rng(1);
  decomp::APD apd(tgt, decomp::parse_decomp_config(j, "test"), rng);
  randomise(apd, 3);
  apd.before_step();
  const Tensor& V = apd.cm.layers[0].V;  // A columns [d_in, C m]
  for (int64_t k = 0; k < V.size(1); ++k) {
    double n2 = 0;
    for (int64_t i = 0; i < V.size(0); ++i) n2 += V.item(i * V.size(1) + k) * V.item(i * V.size(1) + k);
    CHECK(n2 == doctest::Approx(1.0).epsilon(1e-12));
  }
  ad::Rng data(2);
  const decomp::Batch b = tgt.sample(16, data);
  ad::backward(apd.total_loss(b, 0.0, data, nullptr, false));
  apd.after_backward();
  const Tensor g = V.grad();
  for (int64_t k = 0; k < V.size(1); ++k) {
    double dot = 0;
    for (int64_t i = 0; i < V.size(0); ++i) dot += g.item(i * V.size(1) + k) * V.item(i * V.size(1) + k);
    CHECK(std::abs(dot) < 1e-12);
  }
}

// The unit-norm passes split the columns over the thread pool: the same bits with 1 and 3
// threads, and the same bits as the plain per-column loops (float32, A [512, 140]: 2 chunks).
TEST_CASE("apd: the unit-norm A step equals the plain column loops, bit for bit, with any thread count") {
  spd_test::TinyTMS tms(512, 3, false, ad::DType::f32);
  decomp::Target tgt = tms.target();
  nlohmann::json j = apd_config(70, 2, 1.0);
  j["unit_norm_A"] = true;
  auto run = [&](int threads) {
    const int old = ad::num_threads();
    ad::set_num_threads(threads);
    ad::Rng rng(1);
    decomp::APD apd(tgt, decomp::parse_decomp_config(j, "test"), rng);
    randomise(apd, 3);
    const Tensor& V = apd.cm.layers[0].V;
    std::vector<Tensor> out{ad::clone(V)};
    apd.before_step();
    out.push_back(ad::clone(V));
    ad::Rng data(2);
    ad::backward(apd.total_loss(tgt.sample(16, data), 0.0, data, nullptr, false));
    out.push_back(ad::clone(V.grad()));
    apd.after_backward();
    out.push_back(ad::clone(V.grad()));
    ad::set_num_threads(old);
    return out;  // V before, V after before_step, grad before, grad after after_backward
  };
  const std::vector<Tensor> one = run(1), three = run(3);
  const int64_t rows = one[0].size(0), cols = one[0].size(1);
  REQUIRE((rows == 512 && cols == 140));
  std::vector<float> a(one[0].data<float>(), one[0].data<float>() + rows * cols);
  std::vector<float> g(one[2].data<float>(), one[2].data<float>() + rows * cols);
  for (int64_t c = 0; c < cols; ++c) {  // the plain loops, one column at a time
    double n2 = 0;
    for (int64_t i = 0; i < rows; ++i) n2 += (double)a[i * cols + c] * a[i * cols + c];
    if (n2 > 0)
      for (int64_t i = 0; i < rows; ++i) a[i * cols + c] = (float)(a[i * cols + c] * (1.0 / std::sqrt(n2)));
    double dot = 0, m2 = 0;
    for (int64_t i = 0; i < rows; ++i)
      dot += (double)g[i * cols + c] * a[i * cols + c], m2 += (double)a[i * cols + c] * a[i * cols + c];
    if (m2 > 0)
      for (int64_t i = 0; i < rows; ++i) g[i * cols + c] = (float)(g[i * cols + c] - dot / m2 * a[i * cols + c]);
  }
  int64_t off_reference = 0, off_threads = 0;  // entries whose bits differ
  for (int64_t i = 0; i < rows * cols; ++i) {
    off_reference += one[1].data<float>()[i] != a[(size_t)i];
    off_reference += one[3].data<float>()[i] != g[(size_t)i];
    for (size_t k = 0; k < one.size(); ++k) off_threads += three[k].data<float>()[i] != one[k].data<float>()[i];
  }
  CHECK(off_reference == 0);
  CHECK(off_threads == 0);
}

TEST_CASE("apd: config errors name the key; SPD keys and terms are refused in an APD config and vice versa") {
  auto err = [](nlohmann::json j) {
    try {
      decomp::parse_decomp_config(j, "cfg.json");
    } catch (const ad::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  nlohmann::json j = apd_config(3, 2, 1.0);
  j.erase("m");
  CHECK(err(j).find("cfg.json: m: is required for method apd") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["ci_fn"] = {{"type", "mlp"}};
  CHECK(err(j).find("ci_fn") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["attribution"] = "saliency";
  CHECK(err(j).find("attribution: must be gradient, ablation or activation") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["topk"] = -0.5;
  CHECK(err(j).find("topk") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["losses"].push_back({{"name", "stochastic_recon"}});
  CHECK(err(j).find("'stochastic_recon' is not a loss term of method apd") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["losses"].push_back({{"name", "act_recon"}});
  CHECK(err(j).find("losses[3].layers") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["init"] = "xavier";
  CHECK(err(j).find("init: must be normal or kaiming_uniform") != std::string::npos);
  j = apd_config(3, 2, 1.0), j["method"] = "xpd";
  CHECK(err(j).find("method: must be spd, apd or vpd") != std::string::npos);
  nlohmann::json s = nlohmann::json::parse(R"({"C": 4, "losses": [{"name": "minimality"}]})");
  CHECK(err(s).find("'minimality' is not a loss term of method spd") != std::string::npos);
}

TEST_CASE("apd: init kaiming_uniform draws each factor within s sqrt(6 / fan_in), fan_in d_in m and m d_out") {
  spd_test::TinyTMS tms(8, 5, /*identity=*/true, ad::DType::f64);
  const decomp::Target tgt = tms.target();
  nlohmann::json j = apd_config(40, 3, 1.0);
  j["init"] = "kaiming_uniform", j["init_scale"] = 2.0;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  ad::Rng rng(4);
  const decomp::APD apd(tgt, cfg, rng);
  // Uniform on [-b, b]: every |entry| <= b, mean square b^2 / 3 (600-960 draws: within 10%).
  auto check = [](const Tensor& t, double b) {
    double mx = 0, ms = 0;
    for (int64_t i = 0; i < t.numel(); ++i) mx = std::max(mx, std::abs(t.item(i))), ms += t.item(i) * t.item(i);
    ms /= (double)t.numel();
    CHECK(mx <= b);
    CHECK(mx > 0.9 * b);
    CHECK(ms == doctest::Approx(b * b / 3).epsilon(0.1));
  };
  int untied = 0;
  for (const decomp::LayerComponents& L : apd.cm.layers) {
    if (L.tied_src >= 0) continue;
    ++untied;
    CAPTURE(L.name);
    check(L.V, 2.0 * std::sqrt(6.0 / (double)(L.d_in * 3)));
    check(L.U, 2.0 * std::sqrt(6.0 / (double)(3 * L.d_out)));
  }
  CHECK(untied == 2);  // linear1 and the hidden identity; linear2 is tied
}

TEST_CASE("apd: stop + checkpoint + resume gives the same bits as an uninterrupted run") {
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f32);
  decomp::Target tgt = tms.target();
  nlohmann::json j = apd_config(5, 3, 0.25);
  j["unit_norm_A"] = true;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  ad::Rng rng_a(cfg.seed);
  decomp::APD a(tgt, cfg, rng_a);
  decomp::TrainLog log_a;
  CHECK(decomp::train_decomposition(a, &log_a) == 30);
  const std::string path = (std::filesystem::temp_directory_path() / "pd_test_apd_checkpoint.safetensors").string();
  {
    ad::Rng rng_b(cfg.seed);
    decomp::APD b(tgt, cfg, rng_b);
    decomp::TrainLog log_b;
    decomp::TrainHooks hooks;
    hooks.stop_after = 11;
    hooks.checkpoint = [&](int64_t next, const ad::Optimizer& opt, const decomp::TrainLog& l) {
      decomp::save_spd_checkpoint(path, b, opt, l, next, 0.5, j, "tiny", "0123456789abcdef");
    };
    CHECK(decomp::train_decomposition(b, &log_b, {}, &hooks) == 11);
  }
  const decomp::SpdCheckpoint ck = decomp::read_spd_checkpoint(path);
  ad::Rng rng_c(999);
  decomp::APD c(tgt, cfg, rng_c);
  decomp::restore_params(ck, c);
  decomp::TrainLog log_c = ck.file.log;
  decomp::TrainHooks hooks;
  hooks.start_step = ck.file.step;
  hooks.restore_optimizer = [&](ad::Optimizer& opt) { decomp::restore_optimizer(ck, opt); };
  CHECK(decomp::train_decomposition(c, &log_c, {}, &hooks) == 30);
  const std::vector<Tensor> pa = a.all_params(), pc = c.all_params();
  REQUIRE(pa.size() == pc.size());
  for (size_t i = 0; i < pa.size(); ++i) CHECK(pa[i].to_vector() == pc[i].to_vector());
  for (auto& kv : log_a.values)
    if (kv.first != "time_s") CHECK(kv.second == log_c.values.at(kv.first));
  std::filesystem::remove(path);
}

TEST_CASE("apd: pd audit passes on the shipped APD configs (float64 gradient check of one step)") {
  // (apd_resid_mlp2.json passes too: about a minute, too slow for the sanitizer build)
  for (const char* cfg : {"experiments/configs/apd_tms_5-2.json", "experiments/configs/apd_tms_5-2-id.json",
                          "experiments/configs/apd_tms_40-10.json", "experiments/configs/apd_resid_mlp1.json"}) {
    std::ostringstream out;
    const bool ok = decomp::audit_config(cfg, 6, 8, false, out);
    INFO(out.str());
    CHECK_MESSAGE(ok, cfg);
    CHECK(out.str().find("audit passed") != std::string::npos);
  }
}

// The hand-set pentagon target (tests/spd_test_util.hpp), METHODS 2's TMS 5-2 settings at 6000
// steps of batch 1024: seeds 0-3 and both attribution models all recover it (MMCS 0.993-0.995,
// ML2R 0.83-0.84, no identity errors). The trained 5-2 target is harder (docs/results.md).
TEST_CASE("apd: TMS 5-2 decomposition recovers the five features (METHODS 2 defaults, shortened)") {
  spd_test::TinyTMS tms(5, 2, false, ad::DType::f32);
  decomp::Target tgt = tms.target();
  nlohmann::json j = apd_config(5, 3, 0.211);
  j["losses"][2]["p"] = 1.0;
  j["train"] = {{"steps", 6000}, {"batch_size", 1024}, {"lr", 0.03}, {"schedule", "constant"}, {"warmup_frac", 0.05},
                {"log_every", 500}};
  j["seed"] = 0;
  const decomp::DecompConfig cfg = decomp::parse_decomp_config(j, "test");
  ad::Rng rng(cfg.seed);
  decomp::APD apd(tgt, cfg, rng);
  const auto t0 = std::chrono::steady_clock::now();
  decomp::train_decomposition(apd, nullptr);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ad::Rng eval(1);
  const decomp::EvalResult ev = decomp::evaluate(apd, eval);
  MESSAGE("TMS 5-2 APD: " << secs << " s, MMCS " << ev.layers[0].mm.mmcs << " ML2R " << ev.layers[0].mm.ml2r
                          << " id-err " << ev.layers[0].identity_error << " alive " << ev.layers[0].alive);
  CHECK(ev.layers[0].mm.mmcs >= 0.99);
  CHECK(ev.layers[0].mm.ml2r >= 0.75);
  CHECK(ev.layers[0].mm.ml2r <= 1.05);
  CHECK(ev.layers[0].identity_error == 0);
  CHECK(ev.layers[0].alive == 5);
}

TEST_CASE("apd: the attribution kernel's GEMM path equals its plain loop and accumulates") {
  ad::Rng rng(8);
  for (auto dims : std::vector<std::array<int64_t, 4>>{{3, 4, 5, 7}, {2, 130, 100, 9}, {5, 1, 1, 1}}) {
    const int64_t rows = dims[0], C = dims[1], O = dims[2], d = dims[3];
    Tensor P = ad::zeros({rows, C, d}, ad::DType::f64), G = ad::zeros({O, rows, d}, ad::DType::f64);
    Tensor start = ad::zeros({rows, C, O}, ad::DType::f64);
    ad::fill_uniform(P, -1, 1, rng), ad::fill_uniform(G, -1, 1, rng), ad::fill_uniform(start, -1, 1, rng);
    Tensor loop = ad::clone(start), gemm = ad::clone(start);
    decomp::accumulate_attribution_dots(P, G, loop, 0);
    decomp::accumulate_attribution_dots(P, G, gemm, 1);
    double err = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t o = 0; o < O; ++o) {
          double want = start.item((r * C + c) * O + o);
          for (int64_t k = 0; k < d; ++k) want += P.item((r * C + c) * d + k) * G.item((o * rows + r) * d + k);
          err = std::max({err, std::abs(loop.item((r * C + c) * O + o) - want), std::abs(gemm.item((r * C + c) * O + o) - want)});
        }
    CHECK(err < 1e-12);
  }
  Tensor bad = ad::zeros({2, 3, 4}, ad::DType::f64);
  CHECK_THROWS_WITH(decomp::accumulate_attribution_dots(bad, bad, bad), doctest::Contains("accumulate_attribution_dots"));
}

// Simplicity's fused column norms against the composite ad::square / ad::sum / ad::mul: the
// same numbers forward and backward (the same summation order; the compiler may fuse a
// multiply-add the composite rounds twice), and the same bits with 1 and 3 threads, on odd
// sizes above the 2^16 entries that split into several chunks.
TEST_CASE("apd: apd_column_norms equals its composite reference and gives the same bits with any thread count") {
  for (ad::DType dt : {ad::DType::f32, ad::DType::f64}) {
    ad::Rng rng(11);
    Tensor V = ad::rand_uniform({301, 229}, -1, 1, rng, dt), U = ad::rand_uniform({229, 291}, -1, 1, rng, dt);
    const Tensor up = ad::rand_uniform({229}, -1, 1, rng, dt);
    V.requires_grad_(), U.requires_grad_();
    auto run = [&](bool fused, int threads) {
      const int old = ad::num_threads();
      ad::set_num_threads(threads);
      V.zero_grad(), U.zero_grad();
      const Tensor y = fused ? decomp::apd_column_norms(V, U) : decomp::apd_column_norms_reference(V, U);
      ad::backward(ad::sum(y * up));
      ad::set_num_threads(old);
      return std::vector<Tensor>{ad::clone(ad::detach(y)), ad::clone(V.grad()), ad::clone(U.grad())};
    };
    const std::vector<Tensor> ref = run(false, 1), one = run(true, 1), three = run(true, 3);
    const double tol = dt == ad::DType::f32 ? 1e-6 : 1e-14;
    for (size_t k = 0; k < ref.size(); ++k) {
      double worst = 0;  // relative to 1 + |reference|
      int64_t differ = 0;  // entries whose bits depend on the thread count
      for (int64_t i = 0; i < ref[k].numel(); ++i) {
        worst = std::max(worst, std::abs(one[k].item(i) - ref[k].item(i)) / (1 + std::abs(ref[k].item(i))));
        differ += three[k].item(i) != one[k].item(i);
      }
      INFO("dtype " << (int)dt << " tensor " << k);
      CHECK(worst <= tol);
      CHECK(differ == 0);
    }
  }
  CHECK_THROWS_WITH(decomp::apd_column_norms(ad::zeros({3, 4}), ad::zeros({5, 2})), doctest::Contains("apd_column_norms"));
}

AUDIT_CASE("apd_column_norms ||V[:, j]||^2 ||U[j, :]||^2") {
  ad::Rng rng(12);
  using In = std::vector<Tensor>;
  CHECK_GRADIENTS([](const In& v) { return decomp::apd_column_norms(v[0], v[1]); },
                  In({audit::input({5, 7}, rng), audit::input({7, 3}, rng)}));
}
