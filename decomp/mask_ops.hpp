// Fused elementwise ops of SPD's masked forward (METHODS 3.1, 3.3). Each replaces a chain of
// broadcasting engine ops with one pass and a hand-written backward; tests check both the
// gradients (finite differences) and the values against the composed ops.
#pragma once
#include "autodiff/ops.hpp"

namespace decomp {

// Stochastic mask m = g + (1 - g) r, elementwise.  g, r: same shape.
//   dm/dg = 1 - r,  dm/dr = 1 - g   (r may be a leaf: VPD's adversarial sources)
ad::Tensor stochastic_mask(const ad::Tensor& g, const ad::Tensor& r);

// Masked component activations a = h (m - m_delta), the coefficients of the rank-one
// subcomponents in (h (m - m_delta)) U + m_delta (x W^T).
//   h, m: [..., C];  m_delta: [..., 1] (one delta mask per example) or undefined (no delta).
//   da/dh = m - m_delta,  da/dm = h,  dL/dm_delta = -sum_c g_c h_c
ad::Tensor masked_component_acts(const ad::Tensor& h, const ad::Tensor& m, const ad::Tensor& m_delta);

// Output of a masked layer with the delta component (METHODS 3.1):
//   out = a op(U) + m_delta (x W^T),   a = h (m - m_delta) from masked_component_acts
//   a: [..., C];  U: [C, d_out], or stored [d_out, C] when trans_u (tied TMS: hm V_src^T);
//   m_delta: [..., 1];  xw = x W^T: [..., d_out]  ->  out: [..., d_out]
// One pass writes m_delta xw, then one gemm accumulates a op(U) into it (beta = 1). Backward:
//   da += g op(U)^T,  dU += a^T g (transposed back when trans_u),
//   dm_delta[n] += sum_j g[n, j] xw[n, j],  dxw[n, j] += m_delta[n] g[n, j]
// Replaces matmul + mul + add, which made two extra passes over [..., d_out] each way.
ad::Tensor masked_layer_output(const ad::Tensor& a, const ad::Tensor& U, bool trans_u, const ad::Tensor& m_delta,
                               const ad::Tensor& xw);

}  // namespace decomp

namespace decomp {

// masked_layer_output for a layer routed per example (subset routing), computed on the routed
// rows only. The composed form is route * (a U + m_delta xw) + (1 - route) xw over all N rows;
// a row whose route is 0 is xw there whatever a and m_delta are, so the caller gathers the rows
// with route != 0 (h, m, m_delta of those rows only; the x V and a U products shrink with them)
// and this op writes every other row as xw:
//   a: [R, C] (routed rows, in `rows` order);  U: [C, d_out] (or [d_out, C] when trans_u);
//   m_delta: [R, 1] or undefined (no delta);  xw: [..., d_out] with N rows (all of them);
//   rows: R strictly ascending row indices in [0, N);  route: [R] route values of those rows
//   (a constant: it gets no gradient)  ->  out: xw's shape,
//   out[rows[i]] = r_i (a_i op(U) + m_delta_i xw[rows[i]]) + (1 - r_i) xw[rows[i]],  out[n] = xw[n] elsewhere.
// Backward: with g_i = r_i dout[rows[i]],  da = g op(U)^T,  dU += a^T g,  dm_delta_i += g_i . xw[rows[i]],
//   dxw[rows[i]] += (r_i m_delta_i + 1 - r_i) dout[rows[i]],  dxw[n] += dout[n] elsewhere.
ad::Tensor masked_layer_output_rows(const ad::Tensor& a, const ad::Tensor& U, bool trans_u, const ad::Tensor& m_delta,
                                    const ad::Tensor& xw, const ad::Indices& rows, const ad::Tensor& route);

}  // namespace decomp
