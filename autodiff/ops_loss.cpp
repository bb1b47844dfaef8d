// Losses, fused so each is one node with a hand-written backward.
#include "autodiff/ops.hpp"

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
    double acc = 0;  // accumulate in double: toy losses are sums of many tiny squares
    for (int64_t i = 0, n = pred.numel(); i < n; ++i) acc += (double)(pp[i] - pt[i]) * (double)(pp[i] - pt[i]);
    out.data<T>()[0] = (T)(acc / (double)(pred.numel() ? pred.numel() : 1));
  });
  return finish(out);
}

}  // namespace ad
