#include "models/transformers.hpp"

#include <algorithm>
#include <cmath>

namespace models {

ad::Tensor split_heads(const ad::Tensor& x, int64_t H) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
  return ad::permute(ad::reshape(x, {B, T, H, D / H}), {0, 2, 1, 3});
}
ad::Tensor merge_heads(const ad::Tensor& x) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), Dh = x.size(3);
  return ad::reshape(ad::permute(x, {0, 2, 1, 3}), {B, T, H * Dh});
}

static void check_ids(const ad::Indices& ids, int64_t vocab, int64_t max_len, const std::string& who) {
  if (ids.shape.nd != 2) ad::fail(who + ": ids must be [B, T], got " + ids.shape.str());
  if (ids.shape[1] > max_len)
    ad::fail(who + ": sequence length " + std::to_string(ids.shape[1]) + " exceeds max_len " + std::to_string(max_len));
  for (int32_t v : ids.v)
    if (v < 0 || v >= vocab) ad::fail(who + ": token id " + std::to_string(v) + " outside [0, " + std::to_string(vocab) + ")");
}

ad::Tensor sinusoidal_positions(int64_t n_pos, int64_t d, ad::DType dtype) {
  ad::Tensor P = ad::zeros({n_pos, d}, dtype);
  for (int64_t t = 0; t < n_pos; ++t)
    for (int64_t i = 0; i < d; ++i) {
      const double freq = std::pow(10000.0, -(double)(i - i % 2) / (double)d);
      P.set_item(t * d + i, i % 2 == 0 ? std::sin((double)t * freq) : std::cos((double)t * freq));
    }
  return P;
}

// ---- induction transformer -------------------------------------------------------------------

json InductionConfig::to_json() const {
  return json{{"type", "induction"}, {"vocab", vocab},     {"d_model", d_model}, {"n_heads", n_heads},
              {"n_layers", n_layers}, {"max_len", max_len}, {"use_mlp", use_mlp}, {"d_mlp", d_mlp}};
}

InductionConfig InductionConfig::from(ConfigSection& s) {
  InductionConfig c;
  s.accept("type");
  c.vocab = s.get_int("vocab");
  c.d_model = s.get_int("d_model", c.d_model);
  c.n_heads = s.get_int("n_heads", c.n_heads);
  c.n_layers = s.get_int("n_layers", c.n_layers);
  c.max_len = s.get_int("max_len", c.max_len);
  c.use_mlp = s.get_bool("use_mlp", c.use_mlp);
  c.d_mlp = s.get_int("d_mlp", c.d_mlp);
  if (c.vocab < 2) s.error("vocab", "must be >= 2");
  if (c.n_heads < 1 || c.d_model % c.n_heads) s.error("n_heads", "must divide d_model");
  if (c.n_layers < 1 || c.n_layers > 1000) s.error("n_layers", "must be in [1, 1000]");
  if (c.max_len < 2) s.error("max_len", "must be >= 2");
  return c;
}

InductionTransformer::InductionTransformer(const InductionConfig& cfg, ad::Rng& rng, ad::DType dtype) : cfg_(cfg) {
  const int64_t D = cfg.d_model;
  embed_ = new_param({cfg.vocab, D}, dtype);
  init_normal(embed_, 1.0 / std::sqrt((double)D), rng);
  pos_ = sinusoidal_positions(cfg.max_len, D, dtype);
  auto lin = [&](int64_t out, int64_t in) {
    ad::Tensor w = new_param({out, in}, dtype);
    init_normal(w, 1.0 / std::sqrt((double)in), rng);
    return w;
  };
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    Block b;
    const std::string p = "blocks." + std::to_string(l);
    b.q_name = p + ".attn.q_proj";
    b.k_name = p + ".attn.k_proj";
    b.v_name = p + ".attn.v_proj";
    b.o_name = p + ".attn.o_proj";
    b.Wq = lin(D, D);
    b.Wk = lin(D, D);
    b.Wv = lin(D, D);
    b.Wo = lin(D, D);
    if (cfg.use_mlp) {
      b.in_name = p + ".mlp.mlp_in";
      b.out_name = p + ".mlp.mlp_out";
      b.W_in = lin(cfg.d_mlp, D);
      b.W_out = lin(D, cfg.d_mlp);
    }
    blocks_.push_back(b);
  }
  unembed_ = lin(cfg.vocab, D);
}

std::vector<NamedParam> InductionTransformer::parameters() const {
  std::vector<NamedParam> p{{"embed.weight", embed_, false}};
  for (auto& b : blocks_) {
    p.push_back({b.q_name + ".weight", b.Wq, false});
    p.push_back({b.k_name + ".weight", b.Wk, false});
    p.push_back({b.v_name + ".weight", b.Wv, false});
    p.push_back({b.o_name + ".weight", b.Wo, false});
    if (cfg_.use_mlp) {
      p.push_back({b.in_name + ".weight", b.W_in, false});
      p.push_back({b.out_name + ".weight", b.W_out, false});
    }
  }
  p.push_back({"unembed.weight", unembed_, false});
  return p;
}

std::vector<LayerInfo> InductionTransformer::layers() const {
  const int64_t D = cfg_.d_model;
  std::vector<LayerInfo> l;
  for (auto& b : blocks_) {
    l.push_back({b.q_name, b.Wq, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.k_name, b.Wk, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.v_name, b.Wv, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.o_name, b.Wo, ad::Tensor(), D, D, "", false, false});
    if (cfg_.use_mlp) {
      l.push_back({b.in_name, b.W_in, ad::Tensor(), D, cfg_.d_mlp, "", false, false});
      l.push_back({b.out_name, b.W_out, ad::Tensor(), cfg_.d_mlp, D, "", false, false});
    }
  }
  l.push_back({unembed_name_, unembed_, ad::Tensor(), D, cfg_.vocab, "", false, false});
  return l;
}

ad::Tensor InductionTransformer::forward_tokens(const ad::Indices& ids, ForwardHooks* hooks) {
  check_ids(ids, cfg_.vocab, cfg_.max_len, "InductionTransformer.forward_tokens");
  const int64_t T = ids.shape[1];
  ad::Tensor x = apply_embedding(hooks, embed_name_, ids, embed_);  // [B, T, D]
  ad::Tensor pos = ad::slice(pos_, 0, 0, T);                          // [T, D], broadcasts over B
  for (auto& b : blocks_) {
    ad::Tensor xp = x + pos;
    ad::Tensor q = split_heads(apply_linear(hooks, b.q_name, xp, b.Wq), cfg_.n_heads);  // [B, H, T, Dh]
    ad::Tensor k = split_heads(apply_linear(hooks, b.k_name, xp, b.Wk), cfg_.n_heads);
    ad::Tensor v = split_heads(apply_linear(hooks, b.v_name, x, b.Wv), cfg_.n_heads);
    x = x + apply_linear(hooks, b.o_name, merge_heads(ad::attention(q, k, v, true)), b.Wo);
    if (cfg_.use_mlp) x = x + apply_linear(hooks, b.out_name, ad::relu(apply_linear(hooks, b.in_name, x, b.W_in)), b.W_out);
  }
  return apply_linear(hooks, unembed_name_, x, unembed_);  // [B, T, V]
}

// ---- tiny LM --------------------------------------------------------------------------------

json TinyLMConfig::to_json() const {
  json j{{"type", "tiny_lm"}, {"vocab", vocab},     {"d_model", d_model},     {"n_heads", n_heads},
         {"n_layers", n_layers}, {"d_mlp", d_mlp}, {"max_len", max_len},     {"rope_base", rope_base},
         {"norm_eps", norm_eps}};
  if (!tokenizer.is_null()) j["tokenizer"] = tokenizer;
  return j;
}

TinyLMConfig TinyLMConfig::from(ConfigSection& s) {
  TinyLMConfig c;
  s.accept("type");
  c.vocab = s.get_int("vocab", c.vocab);
  c.d_model = s.get_int("d_model", c.d_model);
  c.n_heads = s.get_int("n_heads", c.n_heads);
  c.n_layers = s.get_int("n_layers", c.n_layers);
  c.d_mlp = s.get_int("d_mlp", 4 * c.d_model);
  c.max_len = s.get_int("max_len", c.max_len);
  c.rope_base = s.get_double("rope_base", c.rope_base);
  c.norm_eps = s.get_double("norm_eps", c.norm_eps);
  if (s.has("tokenizer")) c.tokenizer = s.get_raw("tokenizer");
  if (c.vocab < 2) s.error("vocab", "must be >= 2");
  if (c.n_heads < 1 || c.d_model % c.n_heads || (c.d_model / c.n_heads) % 2)
    s.error("n_heads", "must divide d_model into even head sizes (RoPE rotates pairs)");
  if (c.n_layers < 1) s.error("n_layers", "must be >= 1");
  return c;
}

TinyLM::TinyLM(const TinyLMConfig& cfg, ad::Rng& rng, ad::DType dtype) : cfg_(cfg) {
  const int64_t D = cfg.d_model;
  embed_ = new_param({cfg.vocab, D}, dtype);
  init_normal(embed_, 0.02, rng);
  auto lin = [&](int64_t out, int64_t in, double std) {
    ad::Tensor w = new_param({out, in}, dtype);
    init_normal(w, std, rng);
    return w;
  };
  auto ones = [&] {
    ad::Tensor w = ad::ones({D}, dtype);
    w.requires_grad_(true);
    return w;
  };
  // GPT-2 style: the projections that write into the residual stream start smaller, so the
  // stream's variance does not grow with depth.
  const double out_std = 0.02 / std::sqrt(2.0 * (double)cfg.n_layers);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    Block b;
    const std::string p = "blocks." + std::to_string(l);
    b.q_name = p + ".attn.q_proj";
    b.k_name = p + ".attn.k_proj";
    b.v_name = p + ".attn.v_proj";
    b.o_name = p + ".attn.o_proj";
    b.fc_name = p + ".mlp.c_fc";
    b.down_name = p + ".mlp.down_proj";
    b.attn_norm = ones();
    b.mlp_norm = ones();
    b.Wq = lin(D, D, 0.02);
    b.Wk = lin(D, D, 0.02);
    b.Wv = lin(D, D, 0.02);
    b.Wo = lin(D, D, out_std);
    b.W_fc = lin(cfg.d_mlp, D, 0.02);
    b.W_down = lin(D, cfg.d_mlp, out_std);
    blocks_.push_back(b);
  }
  norm_ = ones();
}

std::vector<NamedParam> TinyLM::parameters() const {
  std::vector<NamedParam> p{{"embed.weight", embed_, false}};
  for (size_t l = 0; l < blocks_.size(); ++l) {
    auto& b = blocks_[l];
    const std::string pre = "blocks." + std::to_string(l);
    p.push_back({pre + ".attn_norm.weight", b.attn_norm, false});
    p.push_back({b.q_name + ".weight", b.Wq, false});
    p.push_back({b.k_name + ".weight", b.Wk, false});
    p.push_back({b.v_name + ".weight", b.Wv, false});
    p.push_back({b.o_name + ".weight", b.Wo, false});
    p.push_back({pre + ".mlp_norm.weight", b.mlp_norm, false});
    p.push_back({b.fc_name + ".weight", b.W_fc, false});
    p.push_back({b.down_name + ".weight", b.W_down, false});
  }
  p.push_back({"norm.weight", norm_, false});
  return p;
}

std::vector<LayerInfo> TinyLM::layers() const {
  const int64_t D = cfg_.d_model;
  std::vector<LayerInfo> l;
  for (auto& b : blocks_) {
    l.push_back({b.q_name, b.Wq, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.k_name, b.Wk, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.v_name, b.Wv, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.o_name, b.Wo, ad::Tensor(), D, D, "", false, false});
    l.push_back({b.fc_name, b.W_fc, ad::Tensor(), D, cfg_.d_mlp, "", false, false});
    l.push_back({b.down_name, b.W_down, ad::Tensor(), cfg_.d_mlp, D, "", false, false});
  }
  l.push_back({head_name_, embed_, ad::Tensor(), D, cfg_.vocab, embed_name_, false, false});
  return l;
}

ad::Tensor TinyLM::forward_tokens(const ad::Indices& ids, ForwardHooks* hooks) {
  check_ids(ids, cfg_.vocab, cfg_.max_len, "TinyLM.forward_tokens");
  const int64_t H = cfg_.n_heads;
  ad::Tensor x = apply_embedding(hooks, embed_name_, ids, embed_);  // [B, T, D]
  for (auto& b : blocks_) {
    ad::Tensor n = ad::rms_norm(x, b.attn_norm, cfg_.norm_eps);
    ad::Tensor q = ad::rope(split_heads(apply_linear(hooks, b.q_name, n, b.Wq), H), cfg_.rope_base);  // [B, H, T, Dh]
    ad::Tensor k = ad::rope(split_heads(apply_linear(hooks, b.k_name, n, b.Wk), H), cfg_.rope_base);
    ad::Tensor v = split_heads(apply_linear(hooks, b.v_name, n, b.Wv), H);
    x = x + apply_linear(hooks, b.o_name, merge_heads(ad::attention(q, k, v, true)), b.Wo);
    ad::Tensor m = ad::rms_norm(x, b.mlp_norm, cfg_.norm_eps);
    x = x + apply_linear(hooks, b.down_name, ad::gelu_erf(apply_linear(hooks, b.fc_name, m, b.W_fc)), b.W_down);
  }
  // Tied head: logits = RMSNorm(x) E^T, E: [V, D] is exactly a [d_out, d_in] linear weight.
  return apply_linear(hooks, head_name_, ad::rms_norm(x, norm_, cfg_.norm_eps), embed_);  // [B, T, V]
}

std::vector<int32_t> sample_tokens(Model& lm, std::vector<int32_t> prompt, int64_t n_new, double temperature,
                                   int64_t context, ad::Rng& rng) {
  ad::NoGradGuard ng;
  if (prompt.empty()) ad::fail("sample_tokens: empty prompt");
  std::vector<int32_t> out;
  for (int64_t s = 0; s < n_new; ++s) {
    const size_t start = prompt.size() > (size_t)context ? prompt.size() - (size_t)context : 0;
    std::vector<int32_t> win(prompt.begin() + (ptrdiff_t)start, prompt.end());
    const int64_t T = (int64_t)win.size();
    ad::Tensor logits = lm.forward_tokens(ad::Indices(win, {1, T}));  // [1, T, V]
    const int64_t V = logits.size(2);
    std::vector<double> l((size_t)V);
    for (int64_t v = 0; v < V; ++v) l[(size_t)v] = logits.item((T - 1) * V + v);
    int32_t next = 0;
    if (temperature <= 0) {
      next = (int32_t)(std::max_element(l.begin(), l.end()) - l.begin());
    } else {
      const double mx = *std::max_element(l.begin(), l.end());
      double z = 0;
      for (auto& v : l) z += (v = std::exp((v - mx) / temperature));
      double u = rng.uniform() * z;
      next = (int32_t)(V - 1);
      for (int64_t v = 0; v < V; ++v) {
        u -= l[(size_t)v];
        if (u <= 0) {
          next = (int32_t)v;
          break;
        }
      }
    }
    prompt.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace models
