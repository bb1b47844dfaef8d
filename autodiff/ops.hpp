// Every differentiable op of the engine. Each op's forward and backward sit next to each
// other in one of the ops_*.cpp files; every op has a finite-difference audit case in
// tests/test_gradcheck*.cpp (the suite fails if one is missing).
//
// Conventions: row-major; a linear layer computes y = x W^T + b with W: [d_out, d_in];
// axes may be negative (counted from the end); binary ops broadcast numpy-style.
#pragma once
#include <vector>

#include "autodiff/autograd.hpp"
#include "autodiff/tensor.hpp"

namespace ad {

// ---- matrix products (ops_matmul.cpp) ----------------------------------------------------
// a: [..., M, K] (or [..., K, M] if trans_a), b: [K, N] (or [N, K] if trans_b) or batched
// with the same leading dims as a. Transposes go to BLAS as flags, never as copies.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x: [..., d_in], W: [d_out, d_in], b: [d_out] or undefined  ->  [..., d_out] = x W^T + b
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b = Tensor());

// ---- elementwise, broadcasting (ops_elementwise.cpp) ------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double c);  // x + c
Tensor mul_scalar(const Tensor& x, double c);  // c x
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor pow(const Tensor& x, double p);  // x^p (x > 0 unless p is a whole number)
Tensor relu(const Tensor& x);
Tensor gelu_tanh(const Tensor& x);      // 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
Tensor gelu_erf(const Tensor& x);       // 0.5 x (1 + erf(x / sqrt(2)))
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor clamp(const Tensor& x, double lo, double hi);
// SPD's leaky hard sigmoids (METHODS 3.2), alpha = 0.01 by default.
// lower_leaky: forward clamp(z,0,1); backward g on 0<z<=1, 0 for z>1, and for z<=0
//   alpha*g only when g<0 (only ever pushes a dead component back up), else 0.
Tensor lower_leaky_hard_sigmoid(const Tensor& z, double alpha = 0.01);
// upper_leaky: clamp(z,0,1) for z<=1, 1 + alpha(z-1) above; ordinary derivative.
Tensor upper_leaky_hard_sigmoid(const Tensor& z, double alpha = 0.01);
// cond: any tensor broadcastable to the result, nonzero = take a (cond gets no gradient).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double c) { return add_scalar(a, c); }
inline Tensor operator+(double c, const Tensor& a) { return add_scalar(a, c); }
inline Tensor operator-(const Tensor& a, double c) { return add_scalar(a, -c); }
inline Tensor operator-(double c, const Tensor& a) { return add_scalar(neg(a), c); }
inline Tensor operator*(const Tensor& a, double c) { return mul_scalar(a, c); }
inline Tensor operator*(double c, const Tensor& a) { return mul_scalar(a, c); }
inline Tensor operator/(const Tensor& a, double c) { return mul_scalar(a, 1.0 / c); }

// ---- reductions (ops_reduce.cpp) ---------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> scalar (shape [])
Tensor sum(const Tensor& x, const std::vector<int>& axes, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int>& axes, bool keepdim = false);
Tensor max(const Tensor& x, int axis, bool keepdim = false);  // gradient to the first argmax

// ---- shape (ops_shape.cpp) ---------------------------------------------------------------
Tensor reshape(const Tensor& x, const Shape& s);  // a view: no copy; one dim may be -1
Tensor transpose(const Tensor& x, int d0, int d1);
Tensor permute(const Tensor& x, const std::vector<int>& perm);
Tensor slice(const Tensor& x, int axis, int64_t start, int64_t end);  // [start, end)
Tensor concat(const std::vector<Tensor>& xs, int axis);

// ---- neural-network ops (ops_nn.cpp) -----------------------------------------------------
Tensor softmax(const Tensor& x, int axis = -1);
Tensor log_softmax(const Tensor& x, int axis = -1);
// Normalise over the last dim. weight/bias: [D] (may be undefined).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
// weight: [V, D], ids: any shape  ->  [ids.shape..., D]; backward scatter-adds into weight.
Tensor embedding(const Tensor& weight, const Indices& ids);
// Rotary position embedding, split-half form: x: [B, H, T, Dh] with Dh even; position of
// row t is pos_offset + t; frequencies base^(-2i/Dh).
Tensor rope(const Tensor& x, double base = 10000.0, int64_t pos_offset = 0);
// Scaled dot-product attention over heads: q, k, v: [B, H, T, Dh] -> [B, H, T, Dh];
// softmax(q k^T / sqrt(Dh) [+ causal mask]) v.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal);

// ---- losses (ops_loss.cpp) ----------------------------------------------------------------
Tensor mse_loss(const Tensor& pred, const Tensor& target);  // sum of squares / numel
// logits: [N, V], targets: N ids -> mean over N of -log softmax(logits)[target]
Tensor cross_entropy(const Tensor& logits, const Indices& targets);
// KL(p_target || q) with p = softmax(target_logits) (treated as constant),
// q = softmax(logits), over the last dim; mean over all other positions.
Tensor kl_divergence(const Tensor& target_logits, const Tensor& logits);

// ---- not differentiable ---------------------------------------------------------------
// 1 at the k largest entries of x over the whole tensor (APD's batch top-k), else 0.
// Ties broken by lower flat index. The result never requires a gradient.
Tensor topk_mask(const Tensor& x, int64_t k);

}  // namespace ad
