// The sequence target models of METHODS 1.3-1.4. Both map ids [B, T] -> logits [B, T, V].
#pragma once
#include "models/model.hpp"

namespace models {

// Multi-head attention's head split: [B, T, D] -> [B, H, T, D / H], and back:
// [B, H, T, Dh] -> [B, T, H * Dh].
ad::Tensor split_heads(const ad::Tensor& x, int64_t H);
ad::Tensor merge_heads(const ad::Tensor& x);

// Attention-only induction-head transformer (METHODS 1.3). Residual stream
//   x_0 = embed(ids)                                   [B, T, D]
//   per layer: p = sinusoidal positions [T, D]; q = q_proj(x + p), k = k_proj(x + p),
//              v = v_proj(x)   (positions only enter queries and keys: "shortformer")
//              x <- x + o_proj(causal multi-head attention(q, k, v))
//   [optional MLP per layer: x <- x + mlp_out(ReLU(mlp_in(x)))]
//   logits = unembed(x)                                [B, T, V]
// Layer names: "embed", "blocks.i.attn.{q,k,v,o}_proj", "blocks.i.mlp.{mlp_in,mlp_out}",
// "unembed".
struct InductionConfig {
  int64_t vocab = 16, d_model = 64, n_heads = 2, n_layers = 2, max_len = 64;
  bool use_mlp = false;
  int64_t d_mlp = 128;
  json to_json() const;
  static InductionConfig from(ConfigSection& s);
};

class InductionTransformer : public Model {
 public:
  InductionTransformer(const InductionConfig& cfg, ad::Rng& rng, ad::DType dtype);
  std::string type() const override { return "induction"; }
  json config() const override { return cfg_.to_json(); }
  std::vector<NamedParam> parameters() const override;
  std::vector<LayerInfo> layers() const override;
  ad::DType dtype() const override { return embed_.dtype(); }
  bool takes_tokens() const override { return true; }
  ad::Tensor forward_tokens(const ad::Indices& ids, ForwardHooks* hooks = nullptr) override;
  const InductionConfig& cfg() const { return cfg_; }

 private:
  struct Block {
    std::string q_name, k_name, v_name, o_name, in_name, out_name;
    ad::Tensor Wq, Wk, Wv, Wo, W_in, W_out;
  };
  InductionConfig cfg_;
  ad::Tensor embed_, unembed_, pos_;  // pos_: [max_len, D] sinusoidal table (constant)
  std::vector<Block> blocks_;
  std::string embed_name_ = "embed", unembed_name_ = "unembed";
};

// Llama-style tiny language model (METHODS 1.4): pre-norm blocks
//   h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = RMSNorm(x)
//   x = h + down_proj(GELU(c_fc(RMSNorm(h))))
//   logits = lm_head(RMSNorm(x)) with lm_head tied to the embedding [V, D].
// Layer names: "embed", "blocks.i.attn.{q,k,v,o}_proj", "blocks.i.mlp.{c_fc,down_proj}",
// "lm_head" (tied to embed). Norm weights: "blocks.i.attn_norm.weight",
// "blocks.i.mlp_norm.weight", "norm.weight".
struct TinyLMConfig {
  int64_t vocab = 256, d_model = 128, n_heads = 4, n_layers = 2, d_mlp = 512, max_len = 128;
  double rope_base = 10000.0, norm_eps = 1e-6;
  json tokenizer;  // the tokenizer the model was trained with (saved with the model), may be null
  json to_json() const;
  static TinyLMConfig from(ConfigSection& s);
};

class TinyLM : public Model {
 public:
  TinyLM(const TinyLMConfig& cfg, ad::Rng& rng, ad::DType dtype);
  std::string type() const override { return "tiny_lm"; }
  json config() const override { return cfg_.to_json(); }
  std::vector<NamedParam> parameters() const override;
  std::vector<LayerInfo> layers() const override;
  ad::DType dtype() const override { return embed_.dtype(); }
  bool takes_tokens() const override { return true; }
  ad::Tensor forward_tokens(const ad::Indices& ids, ForwardHooks* hooks = nullptr) override;
  const TinyLMConfig& cfg() const { return cfg_; }
  void set_tokenizer(const json& tok) { cfg_.tokenizer = tok; }

 private:
  struct Block {
    std::string q_name, k_name, v_name, o_name, fc_name, down_name;
    ad::Tensor attn_norm, mlp_norm, Wq, Wk, Wv, Wo, W_fc, W_down;
  };
  TinyLMConfig cfg_;
  ad::Tensor embed_, norm_;
  std::vector<Block> blocks_;
  std::string embed_name_ = "embed", head_name_ = "lm_head";
};

// Sinusoidal position table [n_pos, d]: sin on even, cos on odd columns, 10000^(-2i/d).
ad::Tensor sinusoidal_positions(int64_t n_pos, int64_t d, ad::DType dtype);

// Samples `n_new` tokens after `prompt` (temperature 0 -> greedy). The prompt is cropped to
// the model's context from the left as generation proceeds.
std::vector<int32_t> sample_tokens(Model& lm, std::vector<int32_t> prompt, int64_t n_new, double temperature,
                                   int64_t context, ad::Rng& rng);

}  // namespace models
