// APD against PyTorch float64 (tests/torch/apd_attributions.py): on a TMS 5-3 target with and
// without the hidden identity layer, random rank-2 components, the gradient (the script also
// checks it against brute force), activation and ablation attributions, the batch top-k mask,
// faithfulness, minimality and simplicity and the gradient of their sum agree to 1e-9.
#include <doctest/doctest.h>

#include <cmath>

#include "decomp/apd.hpp"
#include "decomp/attributions.hpp"
#include "tests/spd_test_util.hpp"
#include "tests/torch_runner.hpp"

using ad::Tensor;
using nlohmann::json;

using torch_ref::max_rel_err;
using torch_ref::tensor_json;

TEST_CASE("apd: attributions, top-k and losses match PyTorch float64 to 1e-9") {
  for (bool identity : {false, true}) {
    CAPTURE(identity);
    spd_test::TinyTMS tms(5, 3, identity, ad::DType::f64);
    decomp::Target tgt = tms.target();
    json cfg = json::parse(R"({"method": "apd", "seed": 1, "C": 4, "m": 2, "topk": 1.5,
      "losses": [{"name": "faithfulness", "coeff": 1}, {"name": "minimality", "coeff": 1},
                 {"name": "simplicity", "coeff": 1, "p": 0.9}]})");
    const decomp::DecompConfig dc = decomp::parse_decomp_config(cfg, "test");
    ad::Rng rng(2);
    decomp::APD apd(tgt, dc, rng);
    for (Tensor& p : apd.all_params()) ad::fill_uniform(p, -0.8, 0.8, rng);
    ad::Rng data(6);
    decomp::Batch b = tgt.sample(6, data);
    for (int64_t i = 0; i < b.x.numel(); ++i) b.x.set_item(i, b.x.item(i) + 0.4 * data.uniform());
    json in = {{"W1", tensor_json(tms.W)}, {"b", tensor_json(tms.b)}, {"x", tensor_json(b.x)},
               {"identity", identity}, {"C", 4}, {"m", 2}, {"topk", 1.5}, {"p", 0.9}};
    in["V_linear1"] = tensor_json(apd.cm.layers[0].V), in["U_linear1"] = tensor_json(apd.cm.layers[0].U);
    if (identity) {
      in["I"] = tensor_json(tms.I);
      in["V_hidden"] = tensor_json(apd.cm.layers[1].V), in["U_hidden"] = tensor_json(apd.cm.layers[1].U);
    }
    const torch_ref::Result ref = torch_ref::run("tests/torch/apd_attributions.py", in);
    if (ref.skipped) {
      MESSAGE("skipped: " << ref.reason);
      return;
    }
    REQUIRE_MESSAGE(ref.exit_code == 0, "torch reference failed: " << ref.reason);
    const json& r = ref.out;
    decomp::StepState st = apd.prepare(b, data);
    CHECK(max_rel_err(st.attributions, r["gradient_attributions"]) < 1e-9);
    CHECK(max_rel_err(decomp::gradient_attributions(apd, b, st, 1), r["gradient_attributions"]) < 1e-9);
    CHECK(max_rel_err(decomp::activation_attributions(apd, st), r["activation_attributions"]) < 1e-9);
    CHECK(max_rel_err(decomp::ablation_attributions(apd, b, st), r["ablation_attributions"]) < 1e-9);
    REQUIRE(r["topk_gap"].is_number());
    REQUIRE(r["topk_gap"].get<double>() > 1e-9);  // no near-tie at the K-th attribution
    CHECK(max_rel_err(st.topk, r["topk_mask"]) == 0);
    Tensor total;
    for (const auto& term : dc.losses) {
      CAPTURE(term->kind);
      const Tensor v = apd.term(*term, b, st, 0.5, data);
      const double want = r[term->kind].get<double>();
      CHECK(std::abs(v.item() - want) <= 1e-9 * std::abs(want));
      total = total.defined() ? total + v : v;
    }
    ad::backward(total);
    for (size_t l = 0; l < (identity ? 2u : 1u); ++l) {
      const std::string name = l == 0 ? "linear1" : "hidden";
      CAPTURE(name);
      CHECK(max_rel_err(apd.cm.layers[l].V.grad(), r["grad_total_V_" + name]) < 1e-9);
      CHECK(max_rel_err(apd.cm.layers[l].U.grad(), r["grad_total_U_" + name]) < 1e-9);
    }
  }
}
