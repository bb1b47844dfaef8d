// Reductions. sum is the primitive; mean is sum scaled.
#include "autodiff/broadcast.hpp"
#include "autodiff/ops.hpp"

namespace ad {

// For input shape `in` reduced over the axes set in `mask`: output shape (with or without
// kept dims) and, per input dim, the stride of the output element it lands in (0 on
// reduced dims). The walk over the input then reads/writes out[sum idx_d * ostride_d].
struct ReducePlan {
  Shape out;
  int64_t ostride[kMaxDims] = {0};
};

static ReducePlan reduce_plan(const char* op, const Shape& in, const std::vector<int>& axes, bool keepdim) {
  bool mask[kMaxDims] = {false};
  for (int a : axes) {
    int n = normalize_axis(op, a, in.nd);
    if (mask[n]) fail(std::string(op) + ": axis " + std::to_string(a) + " given twice");
    mask[n] = true;
  }
  ReducePlan p;
  Shape kept = in;  // reduced dims set to 1
  for (int i = 0; i < in.nd; ++i)
    if (mask[i]) kept.d[i] = 1;
  int64_t ks[kMaxDims];
  contiguous_strides(kept, ks);
  for (int i = 0; i < in.nd; ++i) p.ostride[i] = mask[i] ? 0 : ks[i];
  if (keepdim) {
    p.out = kept;
  } else {
    p.out.nd = 0;
    for (int i = 0; i < in.nd; ++i)
      if (!mask[i]) p.out.d[p.out.nd++] = in.d[i];
  }
  return p;
}

// Calls f(i_in, i_out) for every input element.
template <class F>
static void for_each_reduce(const Shape& in, const ReducePlan& p, F&& f) {
  const int64_t n = in.numel();
  if (in.nd == 0) { if (n) f(0, 0); return; }
  int64_t idx[kMaxDims] = {0};
  int64_t io = 0;
  for (int64_t i = 0; i < n; ++i) {
    f(i, io);
    for (int d = in.nd - 1; d >= 0; --d) {
      io += p.ostride[d];
      if (++idx[d] < in.d[d]) break;
      io -= p.ostride[d] * in.d[d];
      idx[d] = 0;
    }
  }
}

AD_REGISTER_OP("sum");
// y = sum over axes of x;  dx = dy broadcast back over the reduced axes.
static void sum_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  std::vector<int> axes;
  for (int i = 0; i < x.dim(); ++i)
    if (o.ints[i]) axes.push_back(i);
  ReducePlan p = reduce_plan("sum", x.shape(), axes, false);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    const T* g = static_cast<const T*>(o.scratch);
    if (gx) for_each_reduce(x.shape(), p, [&](int64_t i, int64_t j) { gx[i] += g[j]; });
  });
}

Tensor sum(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  ReducePlan p = reduce_plan("sum", x.shape(), axes, keepdim);
  Tensor out = make_result("sum", p.out, x.dtype(), {x}, sum_backward);
  for (int a : axes) out.node()->ints[normalize_axis("sum", a, x.dim())] = 1;  // reduced-axis mask
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* y = out.data<T>();
    for (int64_t j = 0; j < p.out.numel(); ++j) y[j] = 0;
    for_each_reduce(x.shape(), p, [&](int64_t i, int64_t j) { y[j] += px[i]; });
  });
  return finish(out);
}

Tensor sum(const Tensor& x) {
  std::vector<int> all;
  for (int i = 0; i < x.dim(); ++i) all.push_back(i);
  return sum(x, all, false);
}

Tensor mean(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  int64_t count = 1;
  for (int a : axes) count *= x.size(normalize_axis("mean", a, x.dim()));
  return mul_scalar(sum(x, axes, keepdim), 1.0 / (double)(count ? count : 1));
}

Tensor mean(const Tensor& x) { return mul_scalar(sum(x), 1.0 / (double)(x.numel() ? x.numel() : 1)); }

}  // namespace ad
