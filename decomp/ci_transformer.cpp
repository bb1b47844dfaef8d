#include "decomp/ci_transformer.hpp"

#include <cmath>

#include "models/transformers.hpp"

namespace decomp {

using ad::Tensor;

namespace {
constexpr double kNormEps = 1e-6;  // every RMS norm here, as GlobalCIFunction's input norm

Tensor ones_leaf(int64_t n, ad::DType dt) {
  Tensor t = ad::full({n}, 1.0, dt);
  t.requires_grad_(true);
  return t;
}
}  // namespace

void CITransformerOptions::check() const {
  const std::string who = "CI transformer: ";
  if (d_model < 1 || n_heads < 1 || n_blocks < 1 || d_mlp < 1)
    ad::fail(who + "d_model, n_heads, n_blocks and d_mlp must be >= 1");
  if (d_model % n_heads)
    ad::fail(who + "n_heads " + std::to_string(n_heads) + " does not divide d_model " + std::to_string(d_model));
  if (rope && (d_model / n_heads) % 2)
    ad::fail(who + "rope needs an even head dimension d_model / n_heads, got " + std::to_string(d_model / n_heads));
}

void GlobalCITransformer::init(const CITransformerOptions& o, const std::vector<int64_t>& din,
                               const std::vector<int64_t>& C, ad::DType dt, ad::Rng& rng) {
  o.check();
  if (din.empty() || din.size() != C.size()) ad::fail("CI transformer: one input size and one C per layer expected");
  opt = o;
  d_in = din;
  const int64_t D = o.d_model;
  auto w = [&](int64_t fan_in, int64_t fan_out, double gain) {
    return leaf_normal({fan_in, fan_out}, std::sqrt(gain / (double)fan_in), dt, rng);
  };
  int64_t total_in = 0;
  for (int64_t d : d_in) total_in += d;
  in_w.clear();
  for (int64_t d : d_in) in_w.push_back(leaf_normal({d, D}, 1.0 / std::sqrt((double)total_in), dt, rng));
  in_b = leaf_zeros({D}, dt);
  blocks.clear();
  for (int64_t k = 0; k < o.n_blocks; ++k) {
    Block b;
    b.attn_norm = ones_leaf(D, dt);
    b.wq = w(D, D, 1), b.wk = w(D, D, 1), b.wv = w(D, D, 1), b.wo = w(D, D, 1);
    b.mlp_norm = ones_leaf(D, dt);
    b.w1 = w(D, o.d_mlp, 2), b.b1 = leaf_zeros({o.d_mlp}, dt);
    b.w2 = w(o.d_mlp, D, 1), b.b2 = leaf_zeros({D}, dt);
    blocks.push_back(b);
  }
  final_norm = ones_leaf(D, dt);
  out_w.clear();
  out_b.clear();
  for (int64_t c : C) out_w.push_back(w(D, c, 1)), out_b.push_back(leaf_zeros({c}, dt));
}

Tensor GlobalCITransformer::embed(const std::vector<Tensor>& xs) const {
  if (xs.size() != in_w.size())
    ad::fail("CI transformer: " + std::to_string(in_w.size()) + " layer inputs expected, got " + std::to_string(xs.size()));
  for (size_t l = 0; l < xs.size(); ++l) {
    const Tensor& x = xs[l];
    if (x.dim() != 3 || x.size(-1) != d_in[l] || x.size(0) != xs[0].size(0) || x.size(1) != xs[0].size(1))
      ad::fail("CI transformer: layer input " + std::to_string(l) + " is " + x.shape().str() + "; every input must be [B, S, d_in] " +
               "with the B, S of input 0 (" + xs[0].shape().str() + ") and d_in " + std::to_string(d_in[l]) +
               " (for inputs without a sequence axis use the global shared_mlp)");
  }
  // Layers that read one tensor (q, k and v of an attention block) share one normalisation
  // and one product: rms(x) W_q + rms(x) W_k + rms(x) W_v = rms(x) (W_q + W_k + W_v).
  Tensor a;
  std::vector<bool> done(xs.size(), false);
  for (size_t l = 0; l < xs.size(); ++l) {
    if (done[l]) continue;
    Tensor W = in_w[l];
    for (size_t j = l + 1; j < xs.size(); ++j)
      if (!done[j] && xs[j].node() == xs[l].node()) W = W + in_w[j], done[j] = true;
    Tensor p = ad::matmul(ad::rms_norm(xs[l], Tensor(), kNormEps), W);
    a = a.defined() ? a + p : p;
  }
  return a + in_b;
}

Tensor GlobalCITransformer::trunk(const Tensor& a0) const {
  const int64_t H = opt.n_heads;
  Tensor a = a0;
  for (const Block& b : blocks) {
    const Tensor n = ad::rms_norm(a, b.attn_norm, kNormEps);
    Tensor q = models::split_heads(ad::matmul(n, b.wq), H);  // [B, H, S, Dh]
    Tensor k = models::split_heads(ad::matmul(n, b.wk), H);
    const Tensor v = models::split_heads(ad::matmul(n, b.wv), H);
    if (opt.rope) q = ad::rope(q), k = ad::rope(k);
    a = a + ad::matmul(models::merge_heads(ad::attention(q, k, v, /*causal=*/false)), b.wo);
    const Tensor m = ad::rms_norm(a, b.mlp_norm, kNormEps);
    a = a + (ad::matmul(ad::gelu_erf(ad::matmul(m, b.w1) + b.b1), b.w2) + b.b2);
  }
  return ad::rms_norm(a, final_norm, kNormEps);
}

std::vector<Tensor> GlobalCITransformer::forward(const std::vector<Tensor>& xs) const {
  const Tensor h = trunk(embed(xs));
  std::vector<Tensor> z;
  for (size_t l = 0; l < out_w.size(); ++l) z.push_back(ad::matmul(h, out_w[l]) + out_b[l]);
  return z;
}

std::vector<Tensor> GlobalCITransformer::parameters() const {
  std::vector<Tensor> p = in_w;
  p.push_back(in_b);
  for (const Block& b : blocks)
    for (const Tensor& t : {b.attn_norm, b.wq, b.wk, b.wv, b.wo, b.mlp_norm, b.w1, b.b1, b.w2, b.b2}) p.push_back(t);
  p.push_back(final_norm);
  for (size_t l = 0; l < out_w.size(); ++l) p.push_back(out_w[l]), p.push_back(out_b[l]);
  return p;
}

std::vector<std::string> GlobalCITransformer::param_names(const std::vector<std::string>& layer_names) const {
  std::vector<std::string> n;
  for (const std::string& l : layer_names) n.push_back("ci_global.in_w." + l);
  n.push_back("ci_global.in_b");
  for (size_t k = 0; k < blocks.size(); ++k)
    for (const char* t : {"attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w1", "b1", "w2", "b2"})
      n.push_back("ci_global.blocks." + std::to_string(k) + "." + t);
  n.push_back("ci_global.final_norm");
  for (const std::string& l : layer_names) n.push_back("ci_global.out_w." + l), n.push_back("ci_global.out_b." + l);
  return n;
}

}  // namespace decomp
