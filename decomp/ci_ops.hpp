// Fused kernels for the CI functions (the composed ops spend most of an SPD step in
// broadcasting and separate GELU passes). Gradients are audited in tests/test_spd_ops.cpp.
#pragma once
#include "autodiff/ops.hpp"

namespace decomp {

// The `mlp` CI function for all C components at once (METHODS 3.2):
//   z[n, c] = sum_k W2[c, k] gelu(h[n, c] W1[c, k] + b1[c, k]) + b2[c]
// h: [..., C]; W1, b1, W2: [C, H]; b2: [C]  ->  z: [..., C]. GELU is the erf form.
ad::Tensor ci_scalar_mlp(const ad::Tensor& h, const ad::Tensor& W1, const ad::Tensor& b1, const ad::Tensor& W2,
                         const ad::Tensor& b2);

// The `vector_mlp` CI function after its first matmul (METHODS 3.2), one pass per example:
//   z[n, c] = sum_k W2[c, k] gelu(xW1[n, c H + k] + b1[c, k]) + b2[c]
// xW1: [..., C*H] (x W1 with W1 [d_in, C*H]); b1, W2: [C, H]; b2: [C]  ->  z: [..., C].
// Nothing [N, C, H]-sized is kept: backward recomputes the GELU per example (the composed
// add + gelu + mul + sum kept four such tensors per layer, ~0.4 GB per induction-head step).
ad::Tensor ci_vector_mlp_head(const ad::Tensor& xW1, const ad::Tensor& b1, const ad::Tensor& W2, const ad::Tensor& b2);

// Bytes up to which ci_scalar_mlp keeps gelu(a) and gelu'(a) ([N, C, H] each) for backward;
// larger inputs are recomputed there per example. Default 512 MiB; tests set 0 to check that
// both paths give the same gradients.
size_t ci_keep_hidden_bytes();
void set_ci_keep_hidden_bytes(size_t bytes);

}  // namespace decomp
