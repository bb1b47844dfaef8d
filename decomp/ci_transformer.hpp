// Global bidirectional transformer CI function (VPD, METHODS 3.2 "Global variants" and 4):
// one network over every decomposed layer's input of a sequence target, z per layer out.
//
// Shapes: layer inputs x_l [B, S, d_l] (the same B, S in every layer), D = d_model, H heads of
// Dh = D / H, outputs z_l [B, S, C_l].
//   a   = sum_l rms(x_l) P_l + b_in        [B, S, D]   rms: x / sqrt(mean(x^2) + 1e-6), no gain
//         (== concat_l(rms(x_l)) P + b_in with P the P_l stacked by rows: the concatenation
//          is stored as one block per layer, as in GlobalCIFunction, so nothing is copied)
//   per block (pre-norm):
//     n = RMSNorm_g1(a);  q, k, v = n Wq, n Wk, n Wv split into H heads [B, H, S, Dh]
//     [rope on q and k];  a += merge(attention(q, k, v), NO causal mask) Wo
//     m = RMSNorm_g2(a);  a += GELU(m W1 + b1) W2 + b2                      (hidden d_mlp)
//   h   = RMSNorm_gf(a)
//   z_l = h O_l + c_l                      [B, S, C_l]  (== h [O_1 .. O_L] + c, split per layer)
// Weights act as x W with W [fan_in, fan_out] (as the other CI functions). GELU is the erf form.
// q, k, v, o have no biases (a key bias cancels in the softmax; the residual stream already
// has b_in and the MLP biases), the other projections do.
//
// Positions: the decomposed layers' inputs need not carry position. The tiny LM has no
// position embedding at all (RoPE acts inside its attention, on q and k only), and the
// induction transformer adds positions only to q_proj / k_proj inputs. Self-attention
// without position information is permutation-equivariant: z at a position could depend on
// the set of other tokens but not on their order or distance, so by default (`rope`) q and k
// get rotary position embeddings (ad::rope, positions 0..S-1) here too.
//
// Initialisation (no learned scale is needed anywhere to keep activations O(1)):
//   P_l: N(0, 1/sum_l d_l), so the unit-RMS concatenated input maps to unit-variance a;
//   Wq, Wk, Wv, Wo, W2, O_l: N(0, 1/fan_in); W1 (feeds GELU): Kaiming N(0, 2/fan_in), as the
//   other CI functions' hidden layers; the last projection O_l reads the unit-RMS h, so the
//   initial z are ~N(0, 1): O(1), on both sides of the hard sigmoids' [0, 1] window;
//   biases 0, norm gains 1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "decomp/ci_functions.hpp"

namespace decomp {

struct CITransformerOptions {
  int64_t d_model = 64, n_heads = 4, n_blocks = 2, d_mlp = 256;
  bool rope = true;
  // Checked by init (and with key names by the config reader): all >= 1, n_heads | d_model,
  // with rope an even head dimension.
  void check() const;
};

struct GlobalCITransformer : GlobalCI {
  struct Block {
    ad::Tensor attn_norm;       // [D]
    ad::Tensor wq, wk, wv, wo;  // [D, D]
    ad::Tensor mlp_norm;        // [D]
    ad::Tensor w1, b1;          // [D, d_mlp], [d_mlp]
    ad::Tensor w2, b2;          // [d_mlp, D], [D]
  };
  CITransformerOptions opt;
  std::vector<int64_t> d_in;              // per layer
  std::vector<ad::Tensor> in_w;           // per layer P_l [d_l, D]
  ad::Tensor in_b;                        // [D]
  std::vector<Block> blocks;
  ad::Tensor final_norm;                  // [D]
  std::vector<ad::Tensor> out_w, out_b;   // per layer O_l [D, C_l], c_l [C_l]

  void init(const CITransformerOptions& o, const std::vector<int64_t>& d_in, const std::vector<int64_t>& C,
            ad::DType dt, ad::Rng& rng);
  // The stages of forward (tests compose them with explicit concatenations):
  ad::Tensor embed(const std::vector<ad::Tensor>& xs) const;  // a [B, S, D]
  ad::Tensor trunk(const ad::Tensor& a) const;                // blocks + final norm: h [B, S, D]

  std::vector<ad::Tensor> forward(const std::vector<ad::Tensor>& xs) const override;
  std::vector<ad::Tensor> parameters() const override;
  std::vector<std::string> param_names(const std::vector<std::string>& layer_names) const override;
  bool needs_sequence() const override { return true; }
};

}  // namespace decomp
