// Shape ops. reshape is a view (shares storage); the rest copy.
#include <algorithm>
#include <cstring>

#include "autodiff/broadcast.hpp"
#include "autodiff/ops.hpp"

namespace ad {

AD_REGISTER_OP("reshape");
// Same elements in the same order: the gradient is the upstream gradient, reshaped.
static void reshape_backward(Node& o) {
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(o.inputs[0]);
    const T* g = static_cast<const T*>(o.scratch);
    if (gx)
      for (int64_t i = 0, n = o.shape.numel(); i < n; ++i) gx[i] += g[i];
  });
}

Tensor reshape(const Tensor& x, const Shape& s) {
  Shape t = s;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < t.nd; ++i) {
    if (t.d[i] == -1) {
      if (infer >= 0) shape_error("reshape", x.shape(), s, "more than one -1");
      infer = i;
    } else {
      known *= t.d[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known) shape_error("reshape", x.shape(), s, "cannot infer the -1 dim");
    t.d[infer] = x.numel() / known;
  }
  if (t.numel() != x.numel()) shape_error("reshape", x.shape(), s, "element counts differ");
  // A view: the node aliases x's storage and keeps x alive through `base`.
  Node* n = new_node();
  n->shape = t;
  n->dtype = x.dtype();
  n->data = x.raw();
  n->owns_data = false;
  n->op = "reshape";
  n->base = x;
  if (grad_enabled() && x.requires_grad()) {
    n->requires_grad = true;
    n->is_leaf = false;
    n->backward = reshape_backward;
    n->n_inputs = 1;
    n->inputs[0] = x;
  }
  return Tensor(n);
}

// ---- permute / transpose ------------------------------------------------------------------
// y = x with its axes reordered: y.shape[i] = x.shape[perm[i]], y[idx] = x[idx scattered by
// perm]. The walk runs over y in row-major order with x's strides permuted, so forward reads
// x[ix] and backward ADDS g[iy] into dx[ix] with the very same index pairs.
// ints[0..nd-1] = perm. transpose is a permute swapping two axes, recorded under its own name.
namespace {
struct PermutePlan {
  Shape out;
  int64_t in_stride[kMaxDims] = {0};  // x's stride for each output dim
};
PermutePlan permute_plan(const Shape& in, const int64_t* perm) {
  PermutePlan p;
  int64_t st[kMaxDims];
  contiguous_strides(in, st);
  p.out.nd = in.nd;
  for (int i = 0; i < in.nd; ++i) {
    p.out.d[i] = in.d[perm[i]];
    p.in_stride[i] = st[perm[i]];
  }
  return p;
}
// f(i_out, i_in) for every element, in output order.
template <class F>
void for_each_permuted(const PermutePlan& p, F&& f) {
  const int nd = p.out.nd;
  const int64_t n = p.out.numel();
  if (n == 0) return;
  if (nd == 0) { f(0, 0); return; }
  const int64_t inner = p.out.d[nd - 1], si = p.in_stride[nd - 1];
  int64_t idx[kMaxDims] = {0};
  int64_t ix = 0;
  for (int64_t i = 0; i < n; i += inner) {
    for (int64_t j = 0; j < inner; ++j) f(i + j, ix + j * si);
    for (int d = nd - 2; d >= 0; --d) {
      ix += p.in_stride[d];
      if (++idx[d] < p.out.d[d]) break;
      ix -= p.in_stride[d] * p.out.d[d];
      idx[d] = 0;
    }
  }
}

void permute_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  PermutePlan p = permute_plan(x.shape(), o.ints);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    const T* g = static_cast<const T*>(o.scratch);
    if (gx) for_each_permuted(p, [&](int64_t iy, int64_t ix) { gx[ix] += g[iy]; });
  });
}

Tensor permute_impl(const char* op, const Tensor& x, const int64_t* perm) {
  PermutePlan p = permute_plan(x.shape(), perm);
  Tensor out = make_result(op, p.out, x.dtype(), {x}, permute_backward);
  for (int i = 0; i < x.dim(); ++i) out.node()->ints[i] = perm[i];
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* y = out.data<T>();
    for_each_permuted(p, [&](int64_t iy, int64_t ix) { y[iy] = px[ix]; });
  });
  return finish(out);
}
}  // namespace

AD_REGISTER_OP("permute");
Tensor permute(const Tensor& x, const std::vector<int>& perm) {
  const int nd = x.dim();
  if ((int)perm.size() != nd)
    fail("permute: perm has " + std::to_string(perm.size()) + " entries for a " + std::to_string(nd) + "-d tensor " +
         x.shape().str());
  int64_t p[kMaxDims];
  bool seen[kMaxDims] = {false};
  for (int i = 0; i < nd; ++i) {
    p[i] = normalize_axis("permute", perm[(size_t)i], nd);
    if (seen[p[i]]) fail("permute: axis " + std::to_string(perm[(size_t)i]) + " appears twice in perm");
    seen[p[i]] = true;
  }
  return permute_impl("permute", x, p);
}

AD_REGISTER_OP("transpose");
Tensor transpose(const Tensor& x, int d0, int d1) {
  const int nd = x.dim();
  const int a = normalize_axis("transpose", d0, nd), b = normalize_axis("transpose", d1, nd);
  int64_t p[kMaxDims];
  for (int i = 0; i < nd; ++i) p[i] = i;
  p[a] = b;
  p[b] = a;
  return permute_impl("transpose", x, p);
}

// ---- slice ----------------------------------------------------------------------------------
// x: [..., n, ...] (n at `axis`) -> [..., end - start, ...]: y = x[..., start:end, ...].
// Negative start/end count from the end (python style); after that 0 <= start <= end <= n.
// Viewed as [outer, n, inner], each outer block copies one contiguous run of
// (end - start) * inner elements; backward adds the run back. ints = (axis, start, end).
AD_REGISTER_OP("slice");
static void slice_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const int axis = (int)o.ints[0];
  const int64_t start = o.ints[1], len = o.ints[2] - o.ints[1];
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= x.size(i);
  for (int i = axis + 1; i < x.dim(); ++i) inner *= x.size(i);
  const int64_t n = x.size(axis);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T* g = static_cast<const T*>(o.scratch);
    for (int64_t r = 0; r < outer; ++r) {
      T* dst = gx + (r * n + start) * inner;
      const T* src = g + r * len * inner;
      for (int64_t j = 0; j < len * inner; ++j) dst[j] += src[j];
    }
  });
}

Tensor slice(const Tensor& x, int axis, int64_t start, int64_t end) {
  const int ax = normalize_axis("slice", axis, x.dim());
  const int64_t n = x.size(ax);
  const int64_t s = start < 0 ? start + n : start, e = end < 0 ? end + n : end;
  if (s < 0 || e > n || s > e)
    fail("slice: range [" + std::to_string(start) + ", " + std::to_string(end) + ") is invalid for axis " +
         std::to_string(axis) + " of size " + std::to_string(n) + " (tensor " + x.shape().str() + ")");
  Shape os = x.shape();
  os.d[ax] = e - s;
  Tensor out = make_result("slice", os, x.dtype(), {x}, slice_backward);
  out.node()->ints[0] = ax;
  out.node()->ints[1] = s;
  out.node()->ints[2] = e;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < ax; ++i) outer *= x.size(i);
  for (int i = ax + 1; i < x.dim(); ++i) inner *= x.size(i);
  const size_t run = (size_t)((e - s) * inner) * dtype_size(x.dtype());
  const char* px = static_cast<const char*>(x.raw());
  char* y = static_cast<char*>(out.raw());
  const size_t es = dtype_size(x.dtype());
  for (int64_t r = 0; r < outer; ++r)
    if (run) std::memcpy(y + r * run, px + (size_t)((r * n + s) * inner) * es, run);
  return finish(out);
}

// ---- concat ---------------------------------------------------------------------------------
// xs[i]: identical shapes except at `axis` (sizes n_i) -> [..., sum_i n_i, ...]. Viewed as
// [outer, n_i, inner], output block r is the concatenation of every input's block r; the
// backward copies each input's part of g back. A node holds at most kMaxInputs inputs, so
// longer lists are concatenated in groups (same result, a few extra nodes). ints[0] = axis.
AD_REGISTER_OP("concat");
static void concat_backward(Node& o) {
  const int axis = (int)o.ints[0];
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= o.shape.d[i];
  for (int i = axis + 1; i < o.shape.nd; ++i) inner *= o.shape.d[i];
  const int64_t row = o.shape.d[axis] * inner;  // output elements per outer block
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T* g = static_cast<const T*>(o.scratch);
    int64_t col = 0;  // offset of input i's part inside an output block
    for (int i = 0; i < o.n_inputs; ++i) {
      const Tensor& x = o.inputs[i];
      const int64_t w = x.size(axis) * inner;
      if (T* gx = grad_of<T>(x))
        for (int64_t r = 0; r < outer; ++r)
          for (int64_t j = 0; j < w; ++j) gx[r * w + j] += g[r * row + col + j];
      col += w;
    }
  });
}

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) fail("concat: empty list of tensors");
  if ((int)xs.size() > kMaxInputs) {
    std::vector<Tensor> groups;
    for (size_t i = 0; i < xs.size(); i += kMaxInputs)
      groups.push_back(concat(std::vector<Tensor>(xs.begin() + i, xs.begin() + std::min(xs.size(), i + kMaxInputs)), axis));
    return concat(groups, axis);
  }
  const Tensor& x0 = xs[0];
  const int ax = normalize_axis("concat", axis, x0.dim());
  Shape os = x0.shape();
  os.d[ax] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    bool ok = x.dim() == x0.dim() && x.dtype() == x0.dtype();
    for (int d = 0; ok && d < x0.dim(); ++d) ok = d == ax || x.size(d) == x0.size(d);
    if (!ok)
      fail("concat: tensor " + std::to_string(i) + " " + x.shape().str() + " (" + dtype_name(x.dtype()) +
           ") does not match tensor 0 " + x0.shape().str() + " (" + dtype_name(x0.dtype()) +
           ") outside axis " + std::to_string(axis));
    os.d[ax] += x.size(ax);
  }
  Tensor out = make_result("concat", os, x0.dtype(), xs.data(), (int)xs.size(), concat_backward);
  out.node()->ints[0] = ax;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < ax; ++i) outer *= os.d[i];
  for (int i = ax + 1; i < os.nd; ++i) inner *= os.d[i];
  const size_t es = dtype_size(x0.dtype());
  const size_t row = (size_t)(os.d[ax] * inner) * es;
  char* y = static_cast<char*>(out.raw());
  size_t col = 0;
  for (const Tensor& x : xs) {
    const size_t w = (size_t)(x.size(ax) * inner) * es;
    const char* px = static_cast<const char*>(x.raw());
    if (w)
      for (int64_t r = 0; r < outer; ++r) std::memcpy(y + r * row + col, px + r * w, w);
    col += w;
  }
  return finish(out);
}

}  // namespace ad
