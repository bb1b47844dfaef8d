// Losses, fused so each is one node with a hand-written backward.
#include <cmath>
#include <cstring>

#include "autodiff/ops.hpp"
#include "autodiff/rowmath.hpp"

namespace ad {

AD_REGISTER_OP("mse_loss");
// L = sum_i (p_i - t_i)^2 / n;  dL/dp_i = 2 (p_i - t_i) / n = -dL/dt_i
static void mse_backward(Node& o) {
  const Tensor &p = o.inputs[0], &t = o.inputs[1];
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T *pp = p.data<T>(), *pt = t.data<T>();
    const T g = static_cast<const T*>(o.scratch)[0] * (T)2 / (T)p.numel();
    T *gp = grad_of<T>(p), *gt = grad_of<T>(t);
    for (int64_t i = 0, n = p.numel(); i < n; ++i) {
      T d = g * (pp[i] - pt[i]);
      if (gp) gp[i] += d;
      if (gt) gt[i] -= d;
    }
  });
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  if (pred.shape() != target.shape()) shape_error("mse_loss", pred.shape(), target.shape(), "pred and target differ");
  if (pred.dtype() != target.dtype()) shape_error("mse_loss", pred.shape(), target.shape(), "dtypes differ");
  Tensor out = make_result("mse_loss", Shape{}, pred.dtype(), {pred, target}, mse_backward);
  dispatch(pred.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *pp = pred.data<T>(), *pt = target.data<T>();
    // Accumulate in double (toy losses are sums of many tiny squares), in 8 independent
    // lanes added in a fixed order: one serial chain of double adds cost 3 ns per element.
    const int64_t n = pred.numel();
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) {
        const double d = (double)(pp[i + j] - pt[i + j]);
        lane[j] += d * d;
      }
    for (; i < n; ++i) {
      const double d = (double)(pp[i] - pt[i]);
      lane[i & 7] += d * d;
    }
    const double acc = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    out.data<T>()[0] = (T)(acc / (double)(n ? n : 1));
  });
  return finish(out);
}

// ---- cross_entropy ---------------------------------------------------------------------------
// logits: [N, V] (or [..., V]: every leading position is one row), targets: N ids in [0, V).
//   L = (1/N) sum_n (lse_n - x_{n, t_n}),  lse_n = log sum_v exp(x_{n,v})   (max-shifted)
// Backward: dx_{n,v} = (g/N) (softmax(x_n)_v - [v == t_n]). saved[0]: lse per row, [N];
// the softmax is recomputed from it instead of storing an [N, V] buffer.
AD_REGISTER_OP("cross_entropy");
static void cross_entropy_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const int64_t V = x.size(-1), N = o.index_count;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T *px = x.data<T>(), *lse = o.saved[0].data<T>();
    const T g = static_cast<const T*>(o.scratch)[0] / (T)N;
    T* e = static_cast<T*>(pool_alloc((size_t)V * sizeof(T)));  // one softmax row
    for (int64_t n = 0; n < N; ++n) {
      T* gr = gx + n * V;
      rowmath::exp_shift_sum(px + n * V, e, V, lse[n]);
      rowmath::add_c_times_a_minus_b(gr, e, (const T*)nullptr, V, g);
      gr[o.index_data[n]] -= g;
    }
    pool_free(e, (size_t)V * sizeof(T));
  });
}

Tensor cross_entropy(const Tensor& logits, const Indices& targets) {
  if (logits.dim() < 1) fail("cross_entropy: logits must be [N, V], got a scalar");
  const int64_t V = logits.size(-1), N = V ? logits.numel() / V : 0;
  if (targets.numel() != N)
    fail("cross_entropy: logits " + logits.shape().str() + " have " + std::to_string(N) + " rows but targets " +
         targets.shape.str() + " hold " + std::to_string(targets.numel()) + " ids");
  if (N == 0) fail("cross_entropy: empty batch (logits " + logits.shape().str() + ")");
  for (int64_t n = 0; n < N; ++n)
    if (targets.v[(size_t)n] < 0 || targets.v[(size_t)n] >= V)
      fail("cross_entropy: target " + std::to_string(targets.v[(size_t)n]) + " at position " + std::to_string(n) +
           " is outside the class range [0, " + std::to_string(V) + ") of logits " + logits.shape().str());
  Tensor out = make_result("cross_entropy", Shape{}, logits.dtype(), {logits}, cross_entropy_backward);
  Tensor lse = empty(Shape{N}, logits.dtype());
  dispatch(logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = logits.data<T>();
    T* pl = lse.data<T>();
    double total = 0;  // in double: a mean over many rows
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * V;
      const T shift = rowmath::safe_shift(rowmath::row_max(xr, V));
      pl[n] = shift + std::log(rowmath::exp_shift_sum_only(xr, V, shift));
      total += (double)pl[n] - (double)xr[targets.v[(size_t)n]];
    }
    out.data<T>()[0] = (T)(total / (double)N);
  });
  Node* nd = out.node();
  nd->index_count = N;  // kept even without a backward: it is also the row count
  if (out.requires_grad()) {
    nd->saved[0] = lse;
    nd->saved_index_buf = pool_alloc((size_t)N * 4);
    std::memcpy(nd->saved_index_buf, targets.v.data(), (size_t)N * 4);
    nd->index_data = static_cast<const int32_t*>(nd->saved_index_buf);
  }
  return finish(out);
}

// ---- kl_divergence ---------------------------------------------------------------------------
// target_logits t, logits x: same shape [..., V]; R = numel / V rows.
//   p = softmax(t) (a constant: no gradient ever flows to t), log q = log_softmax(x)
//   L = (1/R) sum_rows sum_v p_v (log p_v - log q_v)
// Backward: dx_v = (g/R) (q_v - p_v)  (since sum_v p_v = 1).
// saved[0] = t (kept, not an input of the node), saved[1] = [R, 2] (lse(t), lse(x)) per row.
AD_REGISTER_OP("kl_divergence");
static void kl_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const Tensor &t = o.saved[0], &st = o.saved[1];
  const int64_t V = x.size(-1), R = V ? x.numel() / V : 0;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T *px = x.data<T>(), *pt = t.data<T>(), *ps = st.data<T>();
    const T g = static_cast<const T*>(o.scratch)[0] / (T)R;
    T* e = static_cast<T*>(pool_alloc((size_t)(2 * V) * sizeof(T)));  // q and p rows
    for (int64_t r = 0; r < R; ++r) {
      rowmath::exp_shift_sum(px + r * V, e, V, ps[2 * r + 1]);
      rowmath::exp_shift_sum(pt + r * V, e + V, V, ps[2 * r]);
      T* gr = gx + r * V;
      rowmath::add_c_times_a_minus_b(gr, e, e + V, V, g);
    }
    pool_free(e, (size_t)(2 * V) * sizeof(T));
  });
}

Tensor kl_divergence(const Tensor& target_logits, const Tensor& logits) {
  if (target_logits.shape() != logits.shape())
    shape_error("kl_divergence", target_logits.shape(), logits.shape(), "target_logits and logits differ");
  if (target_logits.dtype() != logits.dtype())
    shape_error("kl_divergence", target_logits.shape(), logits.shape(), "dtypes of target_logits and logits differ");
  if (logits.dim() < 1) fail("kl_divergence: logits must be [..., V], got a scalar");
  const int64_t V = logits.size(-1), R = V ? logits.numel() / V : 0;
  if (R == 0) fail("kl_divergence: no positions (logits " + logits.shape().str() + ")");
  Tensor out = make_result("kl_divergence", Shape{}, logits.dtype(), {logits}, kl_backward);
  Tensor stats = empty(Shape{R, 2}, logits.dtype());
  dispatch(logits.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *px = logits.data<T>(), *pt = target_logits.data<T>();
    T* ps = stats.data<T>();
    T* e = static_cast<T*>(pool_alloc((size_t)V * sizeof(T)));
    double total = 0;
    for (int64_t r = 0; r < R; ++r) {
      const T *xr = px + r * V, *tr = pt + r * V;
      const T st = rowmath::safe_shift(rowmath::row_max(tr, V)), sx = rowmath::safe_shift(rowmath::row_max(xr, V));
      const T lt = st + std::log(rowmath::exp_shift_sum_only(tr, V, st));
      const T lx = sx + std::log(rowmath::exp_shift_sum_only(xr, V, sx));
      ps[2 * r] = lt;
      ps[2 * r + 1] = lx;
      // sum_v p_v (log p_v - log q_v) = sum_v p_v ((t_v - lt) - (x_v - lx))
      rowmath::exp_shift_sum(tr, e, V, lt);  // p
      T row = 0;
      for (int64_t v = 0; v < V; ++v)
        if (e[v] > 0) row += e[v] * ((tr[v] - lt) - (xr[v] - lx));  // p = 0 terms vanish
      total += (double)row;
    }
    pool_free(e, (size_t)V * sizeof(T));
    out.data<T>()[0] = (T)(total / (double)R);
  });
  if (out.requires_grad()) {
    out.node()->saved[0] = detach(target_logits);
    out.node()->saved[1] = stats;
  }
  return finish(out);
}

}  // namespace ad
