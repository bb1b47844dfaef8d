// Causal-importance (CI) functions (METHODS 3.2): per layer, or one global function over all
// decomposed layers' inputs (VPD). They map the target's input to a layer to the pre-sigmoid
// CI values z [..., C]; the leaky hard sigmoids that turn z into g live with the masks.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/ops.hpp"
#include "autodiff/random.hpp"

namespace decomp {

// Trainable leaves: N(0, std^2) entries, U(-bound, bound) entries, or zeros.
ad::Tensor leaf_normal(const ad::Shape& s, double std, ad::DType dt, ad::Rng& rng);
ad::Tensor leaf_uniform(const ad::Shape& s, double bound, ad::DType dt, ad::Rng& rng);  // U(-bound, bound)
ad::Tensor leaf_zeros(const ad::Shape& s, ad::DType dt);

// transformer: global only (decomp/ci_transformer.hpp).
enum class CIType { mlp, vector_mlp, shared_mlp, transformer };
CIType parse_ci_type(const std::string& s);  // "mlp" | "vector_mlp" | "shared_mlp" | "transformer"
const char* ci_type_name(CIType t);

// One layer's causal-importance function; z (pre-sigmoid) has shape [..., C].
//  mlp:        per component a scalar MLP 1 -> H -> 1 on h_c = x . v_c
//              params: W1 [C, H], b1 [C, H], W2 [C, H], b2 [C]
//  vector_mlp: per component an MLP d_in -> H -> 1 on x
//              params: W1 [d_in, C*H], b1 [C, H], W2 [C, H], b2 [C]
//  shared_mlp: one MLP d_in -> H1 -> ... -> C on x, params per layer k: Wk [d_k, d_{k+1}], bk
// Hidden activation GELU (erf form, as torch.nn.GELU); hidden weights Kaiming-normal
// (std sqrt(2/fan_in)), last layer std 1/sqrt(fan_in), biases 0.
struct CIFunction {
  CIType type = CIType::mlp;
  std::vector<int64_t> hidden;
  std::vector<ad::Tensor> params;
  std::vector<std::string> param_names;  // "W1", "b1", ... (for audits and checkpoints)
  void init(CIType t, const std::vector<int64_t>& hidden_sizes, int64_t d_in, int64_t C, ad::DType dt,
            ad::Rng& rng);
  // x: the TARGET model's input to the layer [..., d_in]; h = x V [..., C] (used by `mlp`).
  ad::Tensor forward(const ad::Tensor& x, const ad::Tensor& h) const;
};

// One CI function over all decomposed layers' inputs at once (VPD): the target's input to
// every decomposed layer in, z_l [..., C_l] per layer out.
struct GlobalCI {
  virtual ~GlobalCI() = default;
  virtual std::vector<ad::Tensor> forward(const std::vector<ad::Tensor>& xs) const = 0;
  virtual std::vector<ad::Tensor> parameters() const = 0;
  // Checkpoint / audit names parallel to parameters(), all "ci_global.<...>"; per-layer blocks
  // carry the layer's name.
  virtual std::vector<std::string> param_names(const std::vector<std::string>& layer_names) const = 0;
  // True when every layer input must be a sequence [B, S, d] (checked when the decomposition
  // is built, so a toy target fails before training).
  virtual bool needs_sequence() const { return false; }
};

// Global shared CI function (VPD): one MLP over all decomposed layers' inputs at once.
// Each layer input is RMS-normalised; the first MLP layer acting on their concatenation is
// stored as one block per layer (sum_l rms(x_l) W1_l == concat_l(rms(x_l)) W1), and the last
// layer's output split per layer is stored as one block per layer -- identical to
// concatenate -> MLP -> split, without concatenation copies. Only for inputs with the same
// leading shape in every layer.
struct GlobalCIFunction : GlobalCI {
  std::vector<int64_t> hidden;          // at least one hidden layer
  std::vector<ad::Tensor> first_w;      // per layer [d_in_l, H1]
  ad::Tensor first_b;                   // [H1]
  std::vector<ad::Tensor> mid_w, mid_b; // H_k -> H_{k+1}
  std::vector<ad::Tensor> last_w, last_b;  // per layer [H_last, C_l], [C_l]
  void init(const std::vector<int64_t>& hidden_sizes, const std::vector<int64_t>& d_in,
            const std::vector<int64_t>& C, ad::DType dt, ad::Rng& rng);
  std::vector<ad::Tensor> forward(const std::vector<ad::Tensor>& xs) const override;  // z per layer
  std::vector<ad::Tensor> parameters() const override;
  std::vector<std::string> param_names(const std::vector<std::string>& layer_names) const override;
};

}  // namespace decomp
