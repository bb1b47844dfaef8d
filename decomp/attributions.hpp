// APD's attributions A_c(x) (METHODS 2): how much component c matters to the output on each
// example, computed from the TARGET model's pass (layer inputs a_l = st.inputs[l]). All three
// return a constant [rows, C] tensor (rows = every position of the batch, C = APD components).
//
//   gradient    A_c = sum_o ( sum_l g_{l,o} . (a_l P_{c,l}) )^2, g_{l,o} = d y_o / d h_l: one
//               backward of each output y_o to every layer output h_l over one retained graph
//               (for linear layers d y_o / d W_l = a_l g_{l,o}^T, so this is
//               sum_{l,i,j} d y_o / d W_{l,ij} P_{c,l,ij}). Rows must not interact (toy
//               models): the backward of sum_r y_{r,o} then gives each row its own gradient.
//               With attribution_model "apd", y, g and a_l are the APD model's (weights
//               sum_c P_{c,l}, every component on) instead of the target's.
//   ablation    A_c = sum_o (f_APD(x) - f_APD(x | component c zeroed))_o^2, with every
//               component on in f_APD (C + 1 forward passes).
//   activation  A_c = sum_l || a_l A_{c,l} B_{c,l} ||^2.
#pragma once
#include "decomp/apd.hpp"

namespace decomp {

// path: -1 chooses by size (rows-innermost loops for small layers, a GEMM per row for large);
// 0 forces the loops, 1 the GEMMs (tests compare them).
ad::Tensor gradient_attributions(const APD& apd, const Batch& batch, const StepState& st, int path = -1);
ad::Tensor ablation_attributions(const APD& apd, const Batch& batch, const StepState& st);
ad::Tensor activation_attributions(const APD& apd, const StepState& st);

// The kernel of the gradient attributions: dots[r] [C, O] += P[r] [C, d] G[:, r, :]^T per row r,
// with G [O, rows, d] (output o's gradients of every row, contiguous). mode -1: a GEMM per row when C O d is large, else the plain loop; 0: the plain loop
// (the reference); 1: GEMM.
void accumulate_attribution_dots(const ad::Tensor& P, const ad::Tensor& G, ad::Tensor& dots, int mode = -1);

// a_l P_{c,l} for every component: [rows, C, d_out] (constant), from a [..., d_in].
ad::Tensor component_outputs(const APD& apd, int l, const ad::Tensor& a);

}  // namespace decomp
