// PyTorch cross-check of composed graphs (float64): identical inputs go to the engine and to
// tests/torch/autodiff_crosscheck.py; the loss and the gradient of every parameter must agree
// to 1e-9 relative. Graphs: an MLP with cross-entropy; a tiny-LM attention block (embedding,
// RMS norm, split-half RoPE, multi-head causal attention, GELU MLP, tied unembedding,
// cross-entropy + KL); an SPD-style mask chain through the leaky hard sigmoids (the torch side
// writes the lower-leaky backward as an autograd.Function following METHODS.md 3.2).
// Data travels as JSON (doubles printed with round-trip precision) through a temp dir.
// Without python3 + torch the test skips with a message.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"
#include "tests/torch_runner.hpp"

using ad::Shape;
using ad::Tensor;
using json = nlohmann::json;

namespace {

json to_json(const Tensor& t) {
  json j;
  j["shape"] = t.shape().to_vector();
  j["data"] = t.to_vector();
  return j;
}

// One case: named float64 tensors (params get gradients), integer lists and scalars; the
// engine-side graph maps the named tensors to the scalar loss.
struct Case {
  std::map<std::string, Tensor> tensors;
  std::vector<std::string> params;
  std::map<std::string, std::vector<int32_t>> ints;
  std::map<std::string, double> scalars;
  std::function<Tensor(std::map<std::string, Tensor>&)> graph;

  Tensor& add(const std::string& name, Tensor t, bool param) {
    if (param) {
      t.requires_grad_();
      params.push_back(name);
    }
    return tensors[name] = t;
  }
  json spec() const {
    json c;
    for (const auto& [n, t] : tensors) c["tensors"][n] = to_json(t);
    c["params"] = params;
    c["ints"] = json::object();
    for (const auto& [n, v] : ints) c["ints"][n] = v;
    c["scalars"] = json::object();
    for (const auto& [n, v] : scalars) c["scalars"][n] = v;
    return c;
  }
};

Tensor normal(const Shape& s, double std, ad::Rng& rng) { return ad::rand_normal(s, 0, std, rng, ad::DType::f64); }
Tensor uniform(const Shape& s, double lo, double hi, ad::Rng& rng) { return ad::rand_uniform(s, lo, hi, rng, ad::DType::f64); }
std::vector<int32_t> random_ids(int64_t n, int32_t V, ad::Rng& rng) {
  std::vector<int32_t> v((size_t)n);
  for (auto& x : v) x = (int32_t)rng.below((uint64_t)V);
  return v;
}

Case mlp_case(ad::Rng& rng) {
  Case c;
  const int64_t N = 7, d_in = 5, h1 = 11, h2 = 6, V = 3;
  c.add("x", normal({N, d_in}, 1, rng), true);
  c.add("W1", normal({h1, d_in}, 0.5, rng), true);
  c.add("b1", normal({h1}, 0.1, rng), true);
  c.add("W2", normal({h2, h1}, 0.4, rng), true);
  c.add("b2", normal({h2}, 0.1, rng), true);
  c.add("W3", normal({V, h2}, 0.5, rng), true);
  c.add("b3", normal({V}, 0.1, rng), true);
  c.ints["targets"] = random_ids(N, (int32_t)V, rng);
  std::vector<int32_t> t = c.ints["targets"];
  c.graph = [t, N](std::map<std::string, Tensor>& p) {
    Tensor h = ad::relu(ad::linear(p["x"], p["W1"], p["b1"]));
    h = ad::gelu_tanh(ad::linear(h, p["W2"], p["b2"]));
    return ad::cross_entropy(ad::linear(h, p["W3"], p["b3"]), ad::Indices(t, {N}));
  };
  return c;
}

Case attention_case(ad::Rng& rng) {
  Case c;
  const int64_t B = 2, T = 5, H = 2, D = 8, V = 13, Dh = D / H, F = 4 * D;
  const double eps = 1e-6, base = 10000.0;
  c.add("E", normal({V, D}, 0.7, rng), true);
  c.add("g1", uniform({D}, 0.5, 1.5, rng), true);
  for (const char* w : {"Wq", "Wk", "Wv", "Wo"}) c.add(w, normal({D, D}, 0.5, rng), true);
  c.add("g2", uniform({D}, 0.5, 1.5, rng), true);
  c.add("Wup", normal({F, D}, 0.4, rng), true);
  c.add("Wdown", normal({D, F}, 0.2, rng), true);
  c.add("g3", uniform({D}, 0.5, 1.5, rng), true);
  c.add("target_logits", normal({B, T, V}, 1.5, rng), false);
  c.ints["ids"] = random_ids(B * T, (int32_t)V, rng);
  c.ints["next"] = random_ids(B * T, (int32_t)V, rng);
  c.scalars = {{"B", (double)B}, {"T", (double)T}, {"H", (double)H}, {"eps", eps}, {"base", base}};
  std::vector<int32_t> ids = c.ints["ids"], nxt = c.ints["next"];
  c.graph = [=](std::map<std::string, Tensor>& p) {
    Tensor x = ad::embedding(p["E"], ad::Indices(ids, {B, T}));  // [B, T, D]
    Tensor h = ad::rms_norm(x, p["g1"], eps);
    auto heads = [&](const Tensor& W) {  // [B, T, D] -> [B, H, T, Dh]
      return ad::permute(ad::reshape(ad::linear(h, W), {B, T, H, Dh}), {0, 2, 1, 3});
    };
    Tensor q = ad::rope(heads(p["Wq"]), base), k = ad::rope(heads(p["Wk"]), base), v = heads(p["Wv"]);
    Tensor a = ad::reshape(ad::transpose(ad::attention(q, k, v, true), 1, 2), {B, T, D});
    Tensor y = ad::add(x, ad::linear(a, p["Wo"]));
    Tensor m = ad::gelu_erf(ad::linear(ad::rms_norm(y, p["g2"], eps), p["Wup"]));
    y = ad::add(y, ad::linear(m, p["Wdown"]));
    Tensor logits = ad::linear(ad::rms_norm(y, p["g3"], eps), p["E"]);  // tied, [B, T, V]
    Tensor ce = ad::cross_entropy(ad::reshape(logits, {B * T, V}), ad::Indices(nxt, {B * T}));
    return ad::add(ce, ad::mul_scalar(ad::kl_divergence(p["target_logits"], logits), 0.5));
  };
  return c;
}

Case leaky_case(ad::Rng& rng) {
  Case c;
  const int64_t Bn = 9, d_in = 5, C = 6, d_out = 4;
  const double alpha = 0.01;
  c.add("x", normal({Bn, d_in}, 1, rng), true);
  c.add("V", normal({d_in, C}, std::sqrt(1.0 / d_in), rng), true);
  c.add("U", normal({C, d_out}, std::sqrt(1.0 / C), rng), true);
  c.add("W", normal({d_out, d_in}, 0.5, rng), false);
  c.add("s", uniform({C}, 0.5, 1.5, rng), true);
  c.add("t", uniform({C}, -0.2, 0.8, rng), true);  // z spans < 0, (0, 1] and > 1
  c.add("r", uniform({Bn, C}, 0, 1, rng), false);
  c.scalars["alpha"] = alpha;
  c.graph = [=](std::map<std::string, Tensor>& p) {
    Tensor h = ad::matmul(p["x"], p["V"]);                        // [B, C]
    Tensor z = ad::add(ad::mul(h, p["s"]), p["t"]);
    Tensor g_low = ad::lower_leaky_hard_sigmoid(z, alpha), g_up = ad::upper_leaky_hard_sigmoid(z, alpha);
    Tensor mask = ad::add(g_low, ad::mul(ad::add_scalar(ad::neg(g_low), 1.0), p["r"]));
    Tensor target = ad::linear(p["x"], p["W"]);
    Tensor recon = ad::mse_loss(ad::matmul(ad::mul(h, mask), p["U"]), target);
    Tensor recon2 = ad::mse_loss(ad::matmul(ad::mul(h, g_low), p["U"]), target);
    Tensor minimality = ad::mul_scalar(ad::sum(g_up), 0.1 / (double)Bn);
    return ad::add(ad::add(recon, ad::mul_scalar(recon2, 0.5)), minimality);
  };
  return c;
}

double rel_err(double a, double b, double scale) { return std::abs(a - b) / std::max(scale, 1e-300); }

}  // namespace

TEST_CASE("autodiff: composed graphs match PyTorch float64 values and gradients to 1e-9") {
  const std::string script = "tests/torch/autodiff_crosscheck.py";
  ad::Rng rng(2024);
  std::map<std::string, Case> cases;
  cases["mlp_cross_entropy"] = mlp_case(rng);
  cases["attention_block"] = attention_case(rng);
  cases["leaky_mask_chain"] = leaky_case(rng);

  {  // the mask chain must exercise every branch of the leaky sigmoids
    ad::NoGradGuard ng;
    auto& t = cases["leaky_mask_chain"].tensors;
    Tensor z = ad::add(ad::mul(ad::matmul(t["x"], t["V"]), t["s"]), t["t"]);
    int below = 0, inside = 0, above = 0;
    for (double v : z.to_vector()) (v <= 0 ? below : v > 1 ? above : inside)++;
    CHECK(below >= 5);
    CHECK(inside >= 5);
    CHECK(above >= 5);
  }
  json spec;
  for (const auto& [name, c] : cases) spec[name] = c.spec();
  const torch_ref::Result run = torch_ref::run(script, spec);
  if (run.skipped) {
    MESSAGE("skipped: " << run.reason);
    return;
  }
  REQUIRE_MESSAGE(run.exit_code == 0, "torch reference failed: " << run.reason);
  const json& ref = run.out;

  for (auto& [name, c] : cases) {
    INFO("case " << name);
    REQUIRE(ref.contains(name));
    Tensor loss = c.graph(c.tensors);
    const double torch_loss = ref[name]["loss"].get<double>();
    INFO("loss: engine " << loss.item() << " torch " << torch_loss);
    CHECK(rel_err(loss.item(), torch_loss, std::abs(torch_loss)) <= 1e-9);
    ad::backward(loss);
    for (const std::string& pn : c.params) {
      INFO("gradient of " << pn);
      const json& g = ref[name]["grads"][pn];
      const Tensor& p = c.tensors[pn];
      REQUIRE(g["shape"].get<std::vector<int64_t>>() == p.shape().to_vector());
      const std::vector<double> tg = g["data"].get<std::vector<double>>();
      Tensor eg = p.grad();
      REQUIRE(eg.defined());
      double scale = 0;
      for (double v : tg) scale = std::max(scale, std::abs(v));
      CHECK(scale > 0);  // every parameter really receives a gradient
      double worst = 0;
      int64_t worst_i = 0;
      for (int64_t i = 0; i < p.numel(); ++i) {
        double e = rel_err(eg.item(i), tg[(size_t)i], scale);
        if (e > worst) { worst = e; worst_i = i; }
      }
      INFO("worst entry " << worst_i << ": engine " << eg.item(worst_i) << " torch " << tg[(size_t)worst_i]
                          << " (relative to the largest |grad| " << scale << ")");
      CHECK(worst <= 1e-9);
    }
  }
}
