// Audit cases for the shape, neural-network and loss ops (ops_shape.cpp, ops_nn.cpp,
// ops_loss.cpp). Shapes use 1s and primes; several cases reuse an input or form a diamond.
#include "tests/audit.hpp"

using ad::Shape;
using ad::Tensor;
using In = std::vector<Tensor>;

namespace {
// Random ids in [0, V) (repeats likely, so scatter-add and repeated targets are exercised).
ad::Indices random_ids(const Shape& s, int32_t V, ad::Rng& rng) {
  std::vector<int32_t> v((size_t)s.numel());
  for (auto& x : v) x = (int32_t)rng.below((uint64_t)V);
  return ad::Indices(v, s);
}
}  // namespace

AUDIT_CASE("transpose and permute") {
  ad::Rng rng(21);
  Tensor x = audit::input({2, 3, 1, 5}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::transpose(v[0], 1, 3); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::transpose(v[0], -1, 0); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::permute(v[0], {3, 0, 2, 1}); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::permute(v[0], {0, 1, 2, 3}); }, In({x}));
  Tensor m = audit::input({7, 3}, rng);  // m * m^T elementwise needs a square: use m^T m via matmul
  CHECK_GRADIENTS([](const In& v) { return ad::matmul(ad::transpose(v[0], 0, 1), v[0]); }, In({m}));
  // diamond: permute twice back to the original layout and multiply with the input
  CHECK_GRADIENTS([](const In& v) {
    Tensor p = ad::permute(ad::permute(v[0], {2, 0, 3, 1}), {1, 3, 0, 2});
    return ad::mul(p, v[0]);
  }, In({x}));
}

AUDIT_CASE("slice and concat") {
  ad::Rng rng(22);
  Tensor x = audit::input({3, 7, 2}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::slice(v[0], 1, 2, 5); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::slice(v[0], 0, -2, 3); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::slice(v[0], -1, 1, 2); }, In({x}));
  Tensor a = audit::input({3, 1, 2}, rng), b = audit::input({3, 5, 2}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::concat({v[0], v[1], v[0]}, 1); }, In({a, b}));
  CHECK_GRADIENTS([](const In& v) { return ad::concat({v[0], v[0]}, 0); }, In({a}));
  CHECK_GRADIENTS([](const In& v) { return ad::concat({v[0]}, -1); }, In({b}));
  // more inputs than one node holds (grouped), with an input needing no gradient
  Tensor c = audit::input({3, 5, 2}, rng, -1, 1, false);
  CHECK_GRADIENTS([](const In& v) {
    std::vector<Tensor> parts;
    for (int i = 0; i < 11; ++i) parts.push_back(i % 3 == 2 ? v[1] : ad::mul_scalar(v[0], 1.0 + i));
    return ad::concat(parts, 2);
  }, In({b, c}));
  // diamond: split x into halves, swap them back together, and mix with x
  CHECK_GRADIENTS([](const In& v) {
    Tensor lo = ad::slice(v[0], 1, 0, 3), hi = ad::slice(v[0], 1, 3, 7);
    return ad::mul(ad::concat({hi, lo}, 1), v[0]);
  }, In({x}));
}

AUDIT_CASE("softmax and log_softmax over every axis") {
  ad::Rng rng(23);
  Tensor x = audit::input({3, 1, 5}, rng, -3, 3), y = audit::input({2, 7, 3}, rng, -3, 3);
  for (int axis : {-1, 0, 1}) {
    CHECK_GRADIENTS([axis](const In& v) { return ad::softmax(v[0], axis); }, In({y}));
    CHECK_GRADIENTS([axis](const In& v) { return ad::log_softmax(v[0], axis); }, In({y}));
  }
  CHECK_GRADIENTS([](const In& v) { return ad::softmax(v[0], 1); }, In({x}));  // a size-1 axis
  CHECK_GRADIENTS([](const In& v) { return ad::log_softmax(v[0], -1); }, In({x}));
  Tensor big = audit::input({2, 3}, rng, 500, 510);  // would overflow exp without the shift
  CHECK_GRADIENTS([](const In& v) { return ad::log_softmax(v[0]); }, In({big}));
  CHECK_GRADIENTS([](const In& v) { return ad::softmax(v[0]); }, In({big}));
  // used twice: softmax(x) * x, and a diamond through log_softmax and softmax of one node
  CHECK_GRADIENTS([](const In& v) { return ad::mul(ad::softmax(v[0], 0), v[0]); }, In({y}));
  CHECK_GRADIENTS([](const In& v) {
    Tensor h = ad::mul_scalar(v[0], 0.7);
    return ad::add(ad::softmax(h), ad::mul(ad::log_softmax(h), ad::softmax(h, 1)));
  }, In({y}));
}

AUDIT_CASE("rms_norm and layer_norm") {
  ad::Rng rng(24);
  Tensor x = audit::input({2, 3, 7}, rng, -2, 2), w = audit::input({7}, rng, 0.5, 1.5), b = audit::input({7}, rng);
  Tensor x1 = audit::input({5, 1}, rng), w1 = audit::input({1}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::rms_norm(v[0], v[1]); }, In({x, w}));
  CHECK_GRADIENTS([](const In& v) { return ad::rms_norm(v[0], Tensor(), 1e-3); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::rms_norm(v[0], v[1], 0.1); }, In({x1, w1}));
  CHECK_GRADIENTS([](const In& v) { return ad::layer_norm(v[0], v[1], v[2]); }, In({x, w, b}));
  CHECK_GRADIENTS([](const In& v) { return ad::layer_norm(v[0], Tensor(), Tensor()); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::layer_norm(v[0], v[1], Tensor(), 1e-2); }, In({x, w}));
  CHECK_GRADIENTS([](const In& v) { return ad::layer_norm(v[0], Tensor(), v[1]); }, In({x, b}));
  // weight that needs no gradient; the normalised tensor reused
  Tensor wc = audit::input({7}, rng, 0.5, 1.5, false);
  CHECK_GRADIENTS([](const In& v) { return ad::mul(ad::rms_norm(v[0], v[1]), v[0]); }, In({x, wc}));
  Tensor sq = audit::input({7, 7}, rng);  // x doubles as a weight row source: a diamond
  CHECK_GRADIENTS([](const In& v) {
    Tensor wrow = ad::reshape(ad::slice(v[0], 0, 2, 3), {7});
    return ad::layer_norm(v[0], wrow, wrow, 1e-3);
  }, In({sq}));
}

AUDIT_CASE("embedding (scatter-add of repeated ids)") {
  ad::Rng rng(25);
  Tensor W = audit::input({7, 3}, rng);
  ad::Indices ids({4, 1, 4, 6, 0, 4}, {2, 3});
  CHECK_GRADIENTS([ids](const In& v) { return ad::embedding(v[0], ids); }, In({W}));
  ad::Indices one({2}, {1});
  CHECK_GRADIENTS([one](const In& v) { return ad::embedding(v[0], one); }, In({W}));
  // tied embedding: the same matrix embeds and unembeds (a diamond through W)
  ad::Indices seq = random_ids({5}, 7, rng);
  CHECK_GRADIENTS([seq](const In& v) { return ad::linear(ad::embedding(v[0], seq), v[0]); }, In({W}));
}

AUDIT_CASE("rope") {
  ad::Rng rng(26);
  Tensor x = audit::input({2, 3, 5, 6}, rng), x2 = audit::input({1, 1, 3, 2}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::rope(v[0]); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::rope(v[0], 100.0, 7); }, In({x}));
  CHECK_GRADIENTS([](const In& v) { return ad::rope(v[0], 10000.0, 1000); }, In({x2}));
  CHECK_GRADIENTS([](const In& v) { return ad::mul(ad::rope(v[0]), v[0]); }, In({x}));
}

AUDIT_CASE("attention: causal, bidirectional, shared inputs") {
  ad::Rng rng(27);
  Tensor q = audit::input({2, 3, 5, 4}, rng), k = audit::input({2, 3, 5, 4}, rng), v = audit::input({2, 3, 5, 4}, rng);
  for (bool causal : {true, false})
    CHECK_GRADIENTS([causal](const In& t) { return ad::attention(t[0], t[1], t[2], causal); }, In({q, k, v}));
  // fewer queries than keys (the queries are the last positions), single head, Dh = 1
  Tensor q3 = audit::input({1, 1, 3, 1}, rng), k7 = audit::input({1, 1, 7, 1}, rng), v7 = audit::input({1, 1, 7, 1}, rng);
  for (bool causal : {true, false})
    CHECK_GRADIENTS([causal](const In& t) { return ad::attention(t[0], t[1], t[2], causal); }, In({q3, k7, v7}));
  // several causal query blocks (64 rows each): a sample of coordinates keeps this fast
  ad::GradcheckOptions sample;
  sample.max_coords_per_input = 60;
  Tensor ql = audit::input({1, 1, 67, 2}, rng, -2, 2), kl = audit::input({1, 1, 130, 2}, rng, -2, 2),
         vl = audit::input({1, 1, 130, 2}, rng);
  CHECK_GRADIENTS([](const In& t) { return ad::attention(t[0], t[1], t[2], true); }, In({ql, kl, vl}), sample);
  Tensor xl = audit::input({1, 1, 130, 2}, rng, -2, 2);
  CHECK_GRADIENTS([](const In& t) { return ad::attention(t[0], t[0], t[0], true); }, In({xl}), sample);
  // self-attention with q = k = v = x (every gradient path lands in one buffer), and a value
  // that needs no gradient
  Tensor x = audit::input({1, 2, 7, 3}, rng, -2, 2);
  CHECK_GRADIENTS([](const In& t) { return ad::attention(t[0], t[0], t[0], true); }, In({x}));
  Tensor vc = audit::input({2, 3, 5, 4}, rng, -1, 1, false);
  CHECK_GRADIENTS([](const In& t) { return ad::attention(t[0], t[1], t[2], false); }, In({q, k, vc}));
  // a diamond: rope'd q and k from one projection, output mixed with the input again
  CHECK_GRADIENTS([](const In& t) {
    Tensor r = ad::rope(t[0]);
    return ad::add(ad::attention(r, ad::mul_scalar(r, 0.5), t[0], true), t[0]);
  }, In({audit::input({1, 2, 5, 4}, rng)}));
}

AUDIT_CASE("cross_entropy and kl_divergence") {
  ad::Rng rng(28);
  Tensor logits = audit::input({5, 7}, rng, -3, 3);
  ad::Indices t = random_ids({5}, 7, rng);
  CHECK_GRADIENTS([t](const In& v) { return ad::cross_entropy(v[0], t); }, In({logits}));
  Tensor l3 = audit::input({2, 3, 7}, rng, -3, 3);  // [..., V] with targets [2, 3]
  ad::Indices t3 = random_ids({2, 3}, 7, rng);
  CHECK_GRADIENTS([t3](const In& v) { return ad::cross_entropy(v[0], t3); }, In({l3}));
  Tensor one = audit::input({1, 1}, rng);  // V = 1: loss 0, gradient 0
  ad::Indices t1({0}, {1});
  CHECK_GRADIENTS([t1](const In& v) { return ad::mul(ad::cross_entropy(v[0], t1), ad::sum(v[0])); }, In({one}));
  Tensor big = audit::input({3, 7}, rng, 700, 720);  // needs the max shift
  CHECK_GRADIENTS([](const In& v) { return ad::cross_entropy(v[0], ad::Indices({0, 6, 3}, {3})); }, In({big}));
  // logits used twice: CE of x plus CE of 2x
  CHECK_GRADIENTS([t](const In& v) { return ad::add(ad::cross_entropy(v[0], t), ad::cross_entropy(ad::mul_scalar(v[0], 2), t)); }, In({logits}));

  Tensor target = audit::input({2, 3, 7}, rng, -3, 3, false), x = audit::input({2, 3, 7}, rng, -3, 3);
  CHECK_GRADIENTS([](const In& v) { return ad::kl_divergence(v[1], v[0]); }, In({x, target}));
  Tensor sharp = audit::input({4, 5}, rng, -40, 40, false), x45 = audit::input({4, 5}, rng, -3, 3);
  CHECK_GRADIENTS([](const In& v) { return ad::kl_divergence(v[1], v[0]); }, In({x45, sharp}));
  // diamond: KL(softmax(x) || softmax(x W)) with the target built from a constant copy
  Tensor W = audit::input({7, 7}, rng);
  Tensor xc = audit::input({3, 7}, rng, -1, 1, false);
  CHECK_GRADIENTS([](const In& v) { return ad::kl_divergence(v[1], ad::add(ad::linear(v[1], v[0]), ad::linear(v[1], v[0]))); },
                  In({W, xc}));
}

AUDIT_CASE("where with broadcasting") {
  ad::Rng rng(29);
  Tensor a = audit::input({3, 1, 5}, rng), b = audit::input({4, 1}, rng), full = audit::input({3, 4, 5}, rng);
  Tensor cond = ad::rand_bernoulli({4, 5}, 0.5, rng, ad::DType::f64);
  Tensor cond32 = ad::rand_bernoulli({3, 4, 5}, 0.5, rng, ad::DType::f32);  // a float32 mask
  CHECK_GRADIENTS([cond](const In& v) { return ad::where(cond, v[0], v[1]); }, In({a, b}));
  CHECK_GRADIENTS([cond32](const In& v) { return ad::where(cond32, v[0], v[1]); }, In({full, b}));
  Tensor c1 = ad::from_vector({1, 0, 2, 0, -1}, {5}, ad::DType::f64);  // nonzero (even -1) takes a
  CHECK_GRADIENTS([c1](const In& v) { return ad::where(c1, v[0], v[0]); }, In({full}));
  // a diamond: where(x > 0, x, 0.1 x) built from x twice (leaky relu)
  CHECK_GRADIENTS([](const In& v) {
    Tensor pos = ad::relu(ad::detach(ad::mul_scalar(v[0], 1e9)));  // >0 exactly where x > 0
    return ad::mul(ad::where(pos, v[0], ad::mul_scalar(v[0], 0.1)), v[0]);
  }, In({full}));
}

AUDIT_CASE("max over an axis") {
  ad::Rng rng(30);
  Tensor x = audit::input({3, 7, 2}, rng);  // continuous values: no ties, so max is smooth
  for (int axis : {0, 1, -1})
    for (bool keep : {false, true})
      CHECK_GRADIENTS([axis, keep](const In& v) { return ad::max(v[0], axis, keep); }, In({x}));
  Tensor one = audit::input({1, 5}, rng);
  CHECK_GRADIENTS([](const In& v) { return ad::max(v[0], 0); }, In({one}));
  // stable log-sum-exp built from max: a diamond through x
  CHECK_GRADIENTS([](const In& v) {
    Tensor m = ad::max(v[0], 1, true);
    return ad::add(ad::log(ad::sum(ad::exp(ad::sub(v[0], m)), {1})), ad::reshape(m, {3, 2}));
  }, In({x}));
}
