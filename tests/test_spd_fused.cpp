// SPD's fused mask ops (decomp/mask_ops) and the reuse of the cached target pass: each fused
// op is audited by finite differences and compared, values and gradients, with the composed
// engine ops it replaces; passes that reuse the target pass are compared with passes that
// recompute everything.
#include <doctest/doctest.h>

#include <cmath>

#include "autodiff/parallel.hpp"
#include "decomp/ci_ops.hpp"
#include "decomp/mask_ops.hpp"
#include "tests/audit.hpp"
#include "tests/spd_test_util.hpp"

using ad::Tensor;
using In = std::vector<Tensor>;

namespace {

// max |a - b| over two same-shape tensors
double max_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.item(i) - b.item(i)));
  return m;
}

// Values and input gradients (random upstream R) of two functions of the same inputs agree.
void check_same_function(const std::function<Tensor(const In&)>& fused, const std::function<Tensor(const In&)>& composed,
                         const In& inputs, double tol) {
  Tensor a = fused(inputs), b = composed(inputs);
  CHECK(max_diff(a, b) <= tol);
  ad::Rng rng(77);
  Tensor R = ad::rand_normal(a.shape(), 0, 1, rng, a.dtype());
  In ga = ad::grad(a, inputs, R), gb = ad::grad(b, inputs, R);
  for (size_t i = 0; i < inputs.size(); ++i) {
    INFO("input " << i);
    CHECK(max_diff(ga[i], gb[i]) <= tol);
  }
}

}  // namespace

AUDIT_CASE("stochastic_mask m = g + (1 - g) r") {
  ad::Rng rng(31);
  Tensor g = audit::input({3, 7}, rng, 0, 1), r = audit::input({3, 7}, rng, 0, 1);
  CHECK_GRADIENTS([](const In& v) { return decomp::stochastic_mask(v[0], v[1]); }, In({g, r}));
  // the same tensor as g and r: m = g + (1 - g) g
  CHECK_GRADIENTS([](const In& v) { return decomp::stochastic_mask(v[0], v[0]); }, In({g}));
  // r a constant (the usual case: only g is learned)
  Tensor rc = audit::input({3, 7}, rng, 0, 1, false);
  CHECK_GRADIENTS([rc](const In& v) { return decomp::stochastic_mask(v[0], rc); }, In({g}));
}

AUDIT_CASE("masked_component_acts a = h (m - m_delta)") {
  ad::Rng rng(32);
  Tensor h = audit::input({2, 3, 5}, rng), m = audit::input({2, 3, 5}, rng, 0, 1), md = audit::input({2, 3, 1}, rng, 0, 1);
  CHECK_GRADIENTS([](const In& v) { return decomp::masked_component_acts(v[0], v[1], v[2]); }, In({h, m, md}));
  CHECK_GRADIENTS([](const In& v) { return decomp::masked_component_acts(v[0], v[1], Tensor()); }, In({h, m}));
  // reuse: h also serves as the mask
  CHECK_GRADIENTS([](const In& v) { return decomp::masked_component_acts(v[0], v[0], v[1]); }, In({h, md}));
}

AUDIT_CASE("masked_layer_output out = a U + m_delta (x W^T)") {
  ad::Rng rng(33);
  Tensor a = audit::input({2, 3, 5}, rng), U = audit::input({5, 7}, rng), Ut = audit::input({7, 5}, rng);
  Tensor md = audit::input({2, 3, 1}, rng, 0, 1), xw = audit::input({2, 3, 7}, rng);
  CHECK_GRADIENTS([](const In& v) { return decomp::masked_layer_output(v[0], v[1], false, v[2], v[3]); }, In({a, U, md, xw}));
  CHECK_GRADIENTS([](const In& v) { return decomp::masked_layer_output(v[0], v[1], true, v[2], v[3]); }, In({a, Ut, md, xw}));
  // reuse: one [.., 5] tensor as both a and xw (square U)
  Tensor U5 = audit::input({5, 5}, rng);
  CHECK_GRADIENTS([](const In& v) { return decomp::masked_layer_output(v[0], v[1], false, v[2], v[0]); }, In({a, U5, md}));
  // xw a constant (the cached target pass) and a 2-d batch
  Tensor a2 = audit::input({9, 5}, rng), md2 = audit::input({9, 1}, rng, 0, 1), xw2 = audit::input({9, 7}, rng, -1, 1, false);
  CHECK_GRADIENTS([xw2](const In& v) { return decomp::masked_layer_output(v[0], v[1], false, v[2], xw2); }, In({a2, U, md2}));
}

AUDIT_CASE("masked_layer_output_rows out = xw, routed rows r (a U + m_delta xw) + (1 - r) xw") {
  ad::Rng rng(35);
  // 7 rows of xw, 4 routed (one with a fractional route)
  const ad::Indices rows({0, 2, 3, 6}, ad::Shape{4});
  const Tensor r = ad::from_vector({1, 1, 0.5, 1}, {4}, ad::DType::f64);
  Tensor a = audit::input({4, 5}, rng), U = audit::input({5, 3}, rng), Ut = audit::input({3, 5}, rng);
  Tensor md = audit::input({4, 1}, rng, 0, 1), xw = audit::input({7, 3}, rng);
  auto f = [rows, r](bool tu) {
    return [rows, r, tu](const In& v) { return decomp::masked_layer_output_rows(v[0], v[1], tu, v[2], v[3], rows, r); };
  };
  CHECK_GRADIENTS(f(false), In({a, U, md, xw}));
  CHECK_GRADIENTS(f(true), In({a, Ut, md, xw}));
  // no delta; xw [..., d_out] with a leading batch axis
  Tensor xw3 = audit::input({1, 7, 3}, rng);
  CHECK_GRADIENTS([rows, r](const In& v) { return decomp::masked_layer_output_rows(v[0], v[1], false, Tensor(), v[2], rows, r); },
                  In({a, U, xw3}));
}

// masked_layer_output_rows on gathered rows vs the composed routed layer over all rows:
// route (a U + m_delta xw) + (1 - route) xw, the route per row (0 on the rows left out).
TEST_CASE("spd: masked_layer_output_rows equals the composed routed layer (values and gradients)") {
  ad::Rng rng(7);
  const int64_t N = 12, C = 9, D = 5;
  const std::vector<int32_t> routed = {1, 2, 3, 7, 8, 11};
  const std::vector<double> rv = {1, 1, 1, 0.25, 1, 1};
  std::vector<double> route_full((size_t)N, 0.0);
  for (size_t i = 0; i < routed.size(); ++i) route_full[(size_t)routed[i]] = rv[i];
  const ad::Indices rows(routed, ad::Shape{(int64_t)routed.size()});
  const Tensor r = ad::from_vector(rv, {(int64_t)rv.size()}, ad::DType::f64);
  const Tensor route = ad::from_vector(route_full, {N, 1}, ad::DType::f64);
  Tensor a = audit::input({N, C}, rng), U = audit::input({C, D}, rng), Ut = audit::input({D, C}, rng),
         md = audit::input({N, 1}, rng, 0, 1), xw = audit::input({N, D}, rng);
  for (bool tu : {false, true}) {
    INFO("U stored transposed: " << tu);
    check_same_function(
        [&](const In& v) {
          return decomp::masked_layer_output_rows(ad::embedding(v[0], rows), v[1], tu, ad::embedding(v[2], rows), v[3], rows, r);
        },
        [&](const In& v) { return route * (ad::matmul(v[0], v[1], false, tu) + v[2] * v[3]) + (1.0 - route) * v[3]; },
        In({a, tu ? Ut : U, md, xw}), 1e-13);
  }
  check_same_function(
      [&](const In& v) { return decomp::masked_layer_output_rows(ad::embedding(v[0], rows), v[1], false, Tensor(), v[2], rows, r); },
      [&](const In& v) { return route * ad::matmul(v[0], v[1]) + (1.0 - route) * v[2]; }, In({a, U, xw}), 1e-13);
  // no routed row: out = xw, dout passes to xw
  const Tensor out0 = decomp::masked_layer_output_rows(ad::zeros({0, C}, ad::DType::f64), U, false, ad::zeros({0, 1}, ad::DType::f64),
                                                       xw, ad::Indices({}, ad::Shape{0}), ad::zeros({0}, ad::DType::f64));
  const Tensor R = ad::rand_normal({N, D}, 0, 1, rng, ad::DType::f64);
  CHECK(out0.to_vector() == xw.to_vector());
  CHECK(ad::grad(out0, {xw}, R)[0].to_vector() == R.to_vector());
}

TEST_CASE("spd: fused mask ops equal the composed engine ops (values and gradients)") {
  ad::Rng rng(5);
  Tensor g = audit::input({9, 13}, rng, 0, 1), r = audit::input({9, 13}, rng, 0, 1);
  check_same_function([](const In& v) { return decomp::stochastic_mask(v[0], v[1]); },
                      [](const In& v) { return v[0] + (1.0 - v[0]) * v[1]; }, In({g, r}), 1e-14);
  Tensor h = audit::input({4, 3, 11}, rng), m = audit::input({4, 3, 11}, rng, 0, 1), md = audit::input({4, 3, 1}, rng);
  check_same_function([](const In& v) { return decomp::masked_component_acts(v[0], v[1], v[2]); },
                      [](const In& v) { return v[0] * (v[1] - v[2]); }, In({h, m, md}), 1e-14);
  check_same_function([](const In& v) { return decomp::masked_component_acts(v[0], v[1], Tensor()); },
                      [](const In& v) { return v[0] * v[1]; }, In({h, m}), 1e-14);
  // masked_layer_output vs matmul + mul + add, with U plain and stored transposed
  Tensor a = audit::input({4, 3, 11}, rng), U = audit::input({11, 17}, rng), xw = audit::input({4, 3, 17}, rng);
  check_same_function([](const In& v) { return decomp::masked_layer_output(v[0], v[1], false, v[2], v[3]); },
                      [](const In& v) { return ad::matmul(v[0], v[1]) + v[2] * v[3]; }, In({a, U, md, xw}), 1e-13);
  Tensor Ut = audit::input({17, 11}, rng);
  check_same_function([](const In& v) { return decomp::masked_layer_output(v[0], v[1], true, v[2], v[3]); },
                      [](const In& v) { return ad::matmul(v[0], v[1], false, true) + v[2] * v[3]; }, In({a, Ut, md, xw}),
                      1e-13);
}

TEST_CASE("spd: fused mask ops reject mismatched shapes with the op's name") {
  Tensor a = ad::zeros({2, 3}), b = ad::zeros({3, 2}), d = ad::zeros({2, 2});
  CHECK_THROWS_WITH(decomp::stochastic_mask(a, b), doctest::Contains("stochastic_mask"));
  CHECK_THROWS_WITH(decomp::masked_component_acts(a, a, d), doctest::Contains("masked_component_acts"));
  Tensor md = ad::zeros({2, 1}), xw = ad::zeros({2, 4});
  CHECK_THROWS_WITH(decomp::masked_layer_output(a, ad::zeros({2, 4}), false, md, xw), doctest::Contains("masked_layer_output"));
  CHECK_THROWS_WITH(decomp::masked_layer_output(a, ad::zeros({3, 4}), false, md, ad::zeros({2, 5})),
                    doctest::Contains("masked_layer_output"));
  const ad::Indices rows({1, 0}, ad::Shape{2});  // not ascending
  CHECK_THROWS_WITH(decomp::masked_layer_output_rows(a, ad::zeros({3, 4}), false, md, xw, rows, ad::ones({2})),
                    doctest::Contains("strictly ascending"));
  CHECK_THROWS_WITH(decomp::masked_layer_output_rows(a, ad::zeros({3, 4}), false, md, xw, ad::Indices({0}, ad::Shape{1}), ad::ones({1})),
                    doctest::Contains("masked_layer_output_rows"));
}

// Token embedding [vocab 5, d 3] then a linear layer with bias, both decomposed: the
// embedding path of the masked passes (one-hot inputs) and a bias.
static decomp::Target embedding_target() {
  ad::Rng rng(21);
  Tensor E = ad::rand_normal({5, 3}, 0, 1, rng, ad::DType::f64), W = ad::rand_normal({2, 3}, 0, 1, rng, ad::DType::f64),
         b = ad::rand_normal({2}, 0, 1, rng, ad::DType::f64);
  decomp::Target t;
  t.name = "embed_fc";
  t.dtype = ad::DType::f64;
  t.layers.push_back({"embed", E, true, ""});
  t.layers.push_back({"fc", W, false, ""});
  t.forward = [E, W, b](const decomp::Batch& bt, models::ForwardHooks* hk) {
    return models::apply_linear(hk, "fc", models::apply_embedding(hk, "embed", bt.ids, E), W, b);
  };
  t.sample = [](int64_t B, ad::Rng& r) {
    decomp::Batch bt;
    bt.size = B;
    std::vector<int32_t> ids((size_t)(B * 4));
    for (auto& v : ids) v = (int32_t)r.below(5);
    bt.ids = ad::Indices(ids, ad::Shape{B, 4});
    return bt;
  };
  return t;
}

// Every loss term, with and without reuse of the cached target pass: same value, same
// gradient for every parameter. TMS with the identity layer (three decomposed layers, one
// tied) and an embedding + linear target; delta on and off, every routing.
TEST_CASE("spd: reusing the cached target pass changes neither losses nor gradients") {
  spd_test::TinyTMS tms(6, 3, true, ad::DType::f64);
  decomp::Target tms_target = tms.target();
  tms_target.sample = [](int64_t B, ad::Rng& r) {
    decomp::Batch b;
    b.size = B;
    b.x = ad::rand_uniform({B, 6}, 0, 1, r, ad::DType::f64);
    return b;
  };
  decomp::Target emb_target = embedding_target();
  for (const decomp::Target* t : {&tms_target, &emb_target})
    for (bool delta : {true, false})
      for (const char* term : {"stochastic_recon", "stochastic_recon_layerwise", "stochastic_recon_subset",
                               "pgd_recon", "pgd_recon_subset", "ci_masked_recon", "unmasked_recon"}) {
        nlohmann::json j = {{"C", 4}, {"delta", delta}, {"losses", {{{"name", term}, {"coeff", 1}}}}};
        ad::Rng init(3);
        decomp::SPD spd(*t, decomp::parse_decomp_config(j, "reuse test"), init);
        ad::Rng data(8);
        decomp::Batch b = t->sample(7, data);
        std::vector<Tensor> params = spd.all_params();
        auto value_and_grads = [&](bool reuse) {
          spd.reuse_target_pass = reuse;
          ad::Rng r(99);
          decomp::StepState st = spd.prepare(b, r);
          Tensor loss = spd.term(*spd.cfg.losses[0], b, st, 0.5, r);
          std::vector<Tensor> g = ad::grad(loss, params);
          g.push_back(loss);
          return g;
        };
        std::vector<Tensor> with = value_and_grads(true), without = value_and_grads(false);
        INFO("target " << t->name << ", term " << term << ", delta " << delta);
        CHECK(with.back().item() == doctest::Approx(without.back().item()).epsilon(1e-13));
        CHECK(with.back().item() > 0);
        for (size_t i = 0; i < params.size(); ++i) {
          INFO("parameter " << spd.all_param_names()[i]);
          CHECK(max_diff(with[i], without[i]) <= 1e-13);
        }
      }
}

// The fused CI function: kept vs recomputed hidden activations and 1 vs 2 threads give the
// same bits (fixed chunking), on a size that takes the chunked, threaded path.
TEST_CASE("spd: ci_scalar_mlp is bit-identical across threads and keep/recompute paths") {
  ad::Rng rng(12);
  const int64_t N = 301, C = 23, H = 16;  // N C H > 2^16: chunked
  Tensor h = ad::rand_uniform({N, C}, -2, 2, rng), W1 = ad::rand_normal({C, H}, 0, 1.4, rng),
         b1 = ad::rand_normal({C, H}, 0, 1, rng), W2 = ad::rand_normal({C, H}, 0, 0.25, rng),
         b2 = ad::rand_normal({C}, 0, 1, rng);
  for (int64_t n = 0; n < N; n += 3)  // a third of the examples take the zero-row path
    for (int64_t c = 0; c < C; ++c) h.set_item(n * C + c, 0.0);
  for (Tensor* t : {&h, &W1, &b1, &W2, &b2}) t->requires_grad_(true);
  Tensor R = ad::rand_normal({N, C}, 0, 1, rng);
  auto run = [&](int threads, size_t keep_bytes) {
    const int old_threads = ad::num_threads();
    const size_t old_keep = decomp::ci_keep_hidden_bytes();
    ad::set_num_threads(threads);
    decomp::set_ci_keep_hidden_bytes(keep_bytes);
    Tensor z = decomp::ci_scalar_mlp(h, W1, b1, W2, b2);
    std::vector<Tensor> g = ad::grad(z, {h, W1, b1, W2, b2}, R);
    ad::set_num_threads(old_threads);
    decomp::set_ci_keep_hidden_bytes(old_keep);
    g.push_back(z);
    return g;
  };
  const std::vector<Tensor> ref = run(1, size_t(1) << 30);
  for (int threads : {1, 2})
    for (size_t keep : {size_t(0), size_t(1) << 30}) {
      INFO("threads " << threads << ", keep bytes " << keep);
      const std::vector<Tensor> got = run(threads, keep);
      for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i].to_vector() == ref[i].to_vector());
    }
}

// The fused CI functions evaluate GELU with the gelu_erf op's kernel (autodiff/rowmath.hpp):
// with b1 = 0, h = 1 (scalar mlp) and W2 one-hot in column k, z[c] = gelu(a[c, k]) and
// db1[c, k] = gelu'(a[c, k]) exactly (products with 1 and sums with 0 are exact), so both
// must equal the op's value and gradient bit for bit in float32 (8-lane kernel and scalar
// tail: C H = 1072 and 335). float64's Phi + x phi is plain C++, where the compiler may fuse
// a different product into an FMA at each call site: there, 1 ulp of Phi.
TEST_CASE("spd: the fused CI functions' GELU is the gelu_erf op's, bit for bit in float32") {
  for (ad::DType dt : {ad::DType::f32, ad::DType::f64})
    for (int64_t H : {16, 5}) {
      const int64_t C = 67, CH = C * H;
      INFO((dt == ad::DType::f32 ? "float32" : "float64") << ", H " << H);
      std::vector<double> a((size_t)CH);
      for (int64_t i = 0; i < CH; ++i) a[(size_t)i] = -15.0 + 30.0 * (double)i / (double)(CH - 1);
      a[3] = 0, a[4] = 1e-30, a[5] = -1e-30, a[6] = 1e-40, a[(size_t)CH - 1] = -7.25;
      Tensor A = ad::from_vector(a, {C, H}, dt).requires_grad_(true);
      const Tensor y = ad::gelu_erf(A), dy = ad::grad(y, {A}, ad::ones({C, H}, dt))[0];
      const Tensor W1 = ad::detach(A), h = ad::ones({1, C}, dt), b2 = ad::zeros({C}, dt), g = ad::ones({1, C}, dt);
      for (int64_t k = 0; k < H; ++k) {
        Tensor W2 = ad::zeros({C, H}, dt);
        for (int64_t c = 0; c < C; ++c) W2.set_item(c * H + k, 1.0);
        Tensor b1 = ad::zeros({C, H}, dt).requires_grad_(true);
        const Tensor z = decomp::ci_scalar_mlp(h, W1, b1, W2, b2), db1 = ad::grad(z, {b1}, g)[0];
        const Tensor zv = decomp::ci_vector_mlp_head(ad::reshape(W1, {1, CH}), b1, W2, b2), db1v = ad::grad(zv, {b1}, g)[0];
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = c * H + k;
          INFO("a = " << a[(size_t)i]);
          const double tol = dt == ad::DType::f32 ? 0.0 : 2.3e-16;  // Phi, x phi <= 1
          CHECK(z.item(c) == y.item(i));
          CHECK(std::fabs(db1.item(i) - dy.item(i)) <= tol);
          CHECK(zv.item(c) == y.item(i));
          CHECK(std::fabs(db1v.item(i) - dy.item(i)) <= tol);
        }
      }
    }
}

// vector_mlp's fused GELU + output layer: audit (random upstream, odd sizes, 3-d batch,
// reuse of one tensor as b1 and W2), then against the composed ops it replaces, in float64
// and in float32 (the AVX2 GELU) on a size that takes the chunked, threaded path.
AUDIT_CASE("ci_vector_mlp_head z = sum_k W2 gelu(xW1 + b1) + b2") {
  ad::Rng rng(34);
  Tensor pre = audit::input({2, 3, 4 * 5}, rng, -2, 2), b1 = audit::input({4, 5}, rng), W2 = audit::input({4, 5}, rng),
         b2 = audit::input({4}, rng);
  CHECK_GRADIENTS([](const In& v) { return decomp::ci_vector_mlp_head(v[0], v[1], v[2], v[3]); }, In({pre, b1, W2, b2}));
  CHECK_GRADIENTS([](const In& v) { return decomp::ci_vector_mlp_head(v[0], v[1], v[1], v[2]); }, In({pre, b1, b2}));
  // xW1 a constant (only the CI parameters learn)
  Tensor prec = audit::input({7, 3 * 9}, rng, -2, 2, false), b1b = audit::input({3, 9}, rng), W2b = audit::input({3, 9}, rng),
         b2b = audit::input({3}, rng);
  CHECK_GRADIENTS([prec](const In& v) { return decomp::ci_vector_mlp_head(prec, v[0], v[1], v[2]); }, In({b1b, W2b, b2b}));
}

namespace {
Tensor composed_vector_mlp_head(const Tensor& pre, const Tensor& b1, const Tensor& W2, const Tensor& b2) {
  ad::Shape s = pre.shape();
  s.d[s.nd - 1] = W2.size(0);
  s.d[s.nd++] = W2.size(1);
  return ad::sum(ad::gelu_erf(ad::reshape(pre, s) + b1) * W2, {-1}) + b2;
}
}  // namespace

TEST_CASE("spd: ci_vector_mlp_head equals the composed ops (float64; float32 AVX2 within 1e-5) and is thread-independent") {
  ad::Rng rng(6);
  Tensor pre = audit::input({3, 5, 7 * 11}, rng, -3, 3), b1 = audit::input({7, 11}, rng), W2 = audit::input({7, 11}, rng),
         b2 = audit::input({7}, rng);
  check_same_function([](const In& v) { return decomp::ci_vector_mlp_head(v[0], v[1], v[2], v[3]); },
                      [](const In& v) { return composed_vector_mlp_head(v[0], v[1], v[2], v[3]); }, In({pre, b1, W2, b2}),
                      1e-12);
  // float32, H = 16 (AVX2 rows), N C H > 2^16 (chunked)
  const int64_t N = 211, C = 25, H = 16;
  In in64 = {audit::input({N, C * H}, rng, -3, 3), audit::input({C, H}, rng), audit::input({C, H}, rng), audit::input({C}, rng)};
  In in32;
  for (const Tensor& t : in64) in32.push_back(ad::to_dtype(t, ad::DType::f32).requires_grad_(true));
  Tensor R = ad::rand_normal({N, C}, 0, 1, rng, ad::DType::f64);
  Tensor z64 = composed_vector_mlp_head(in64[0], in64[1], in64[2], in64[3]);
  In g64 = ad::grad(z64, in64, R);
  auto run = [&](int threads) {
    const int old = ad::num_threads();
    ad::set_num_threads(threads);
    Tensor z = decomp::ci_vector_mlp_head(in32[0], in32[1], in32[2], in32[3]);
    In g = ad::grad(z, in32, ad::to_dtype(R, ad::DType::f32));
    ad::set_num_threads(old);
    g.push_back(z);
    return g;
  };
  const In g32 = run(1), g32_2 = run(2);
  for (size_t k = 0; k < g32.size(); ++k) {
    INFO("output " << k);
    CHECK(g32[k].to_vector() == g32_2[k].to_vector());
    const Tensor& want = k < g64.size() ? g64[k] : z64;
    double err = 0, scale = 0;
    for (int64_t i = 0; i < want.numel(); ++i)
      err = std::max(err, std::fabs(want.item(i) - g32[k].item(i))), scale = std::max(scale, std::fabs(want.item(i)));
    CHECK(err <= 1e-5 * (1 + scale));
  }
}

TEST_CASE("spd: ci_vector_mlp_head rejects mismatched shapes with the op's name") {
  Tensor pre = ad::zeros({4, 12}), b1 = ad::zeros({3, 4}), W2 = ad::zeros({3, 4}), b2 = ad::zeros({3});
  CHECK_THROWS_WITH(decomp::ci_vector_mlp_head(ad::zeros({4, 11}), b1, W2, b2), doctest::Contains("ci_vector_mlp_head"));
  CHECK_THROWS_WITH(decomp::ci_vector_mlp_head(pre, ad::zeros({4, 3}), W2, b2), doctest::Contains("ci_vector_mlp_head"));
  CHECK_THROWS_WITH(decomp::ci_vector_mlp_head(pre, b1, W2, ad::zeros({4})), doctest::Contains("ci_vector_mlp_head"));
}

TEST_CASE("parallel_chunks runs every chunk exactly once, with any thread count") {
  for (int threads : {1, 2, 3}) {
    const int old = ad::num_threads();
    ad::set_num_threads(threads);
    std::vector<int> hits(37, 0);
    for (int rep = 0; rep < 50; ++rep) ad::parallel_chunks(37, [&](int c) { hits[c] += 1; });
    ad::set_num_threads(old);
    for (int c = 0; c < 37; ++c) CHECK(hits[c] == 50);
  }
  CHECK(ad::chunk_range(10, 3, 0) == std::pair<int64_t, int64_t>(0, 3));
  CHECK(ad::chunk_range(10, 3, 2) == std::pair<int64_t, int64_t>(6, 10));
  // fixed_chunks: one chunk below 2^16 entries, else the items capped at max_chunks.
  CHECK(ad::fixed_chunks((1 << 16) - 1, 100, 16) == 1);
  CHECK(ad::fixed_chunks(1 << 16, 100, 16) == 16);
  CHECK(ad::fixed_chunks(1 << 16, 5, 16) == 5);
  CHECK(ad::fixed_chunks(1 << 20, 0, 8) == 1);
  CHECK(ad::fixed_chunks(1 << 20, 1000, 8) == 8);
}
