// Reductions. sum is the primitive; mean is sum scaled.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

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

// mask[d] = true for every axis listed (negative axes count from the end). The reduced
// axes travel as a fixed-size mask rather than a std::vector so that a warmed-up training
// step allocates nothing on the heap (pd bench op_allocs checks this).
static void mark_axes(const char* op, const Shape& in, const std::vector<int>& axes, bool* mask) {
  for (int a : axes) {
    int n = normalize_axis(op, a, in.nd);
    if (mask[n]) fail(std::string(op) + ": axis " + std::to_string(a) + " given twice");
    mask[n] = true;
  }
}

static ReducePlan reduce_plan(const Shape& in, const bool* mask, bool keepdim) {
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

// When the reduced axes are one contiguous run of dims, x is [outer, R, inner] and
// y = [outer, inner] (the usual cases: a leading batch axis, a trailing feature axis). The
// loops below replace the per-element odometer walk of for_each_reduce, which cost ~15x.
struct BlockReduce {
  bool ok = false;
  int64_t outer = 1, R = 1, inner = 1;
};
static BlockReduce block_reduce(const Shape& in, const bool* mask) {
  BlockReduce b;
  int first = -1, last = -1;
  for (int i = 0; i < in.nd; ++i)
    if (mask[i]) {
      if (first < 0) first = i;
      else if (last != i - 1) return b;  // a gap: not one run
      last = i;
    }
  if (first < 0) return b;
  for (int i = 0; i < in.nd; ++i) (i < first ? b.outer : (i <= last ? b.R : b.inner)) *= in.d[i];
  b.ok = true;
  return b;
}

// y[o, j] = sum_r x[o, r, j]. inner > 1: r outer, j inner (vectorises over j; each y in r
// order, as the generic walk). inner = 1: each row of R summed in 8 interleaved lanes (a
// single chain of adds is latency-bound), combined in a fixed order.
template <class T>
static void block_sum(const BlockReduce& b, const T* x, T* y) {
  const int64_t R = b.R, inner = b.inner;
  for (int64_t o = 0; o < b.outer; ++o) {
    const T* xo = x + o * R * inner;
    if (inner == 1) {
      T lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t r = 0;
      for (; r + 8 <= R; r += 8)
        for (int k = 0; k < 8; ++k) lane[k] += xo[r + k];
      for (; r < R; ++r) lane[r & 7] += xo[r];
      y[o] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
      continue;
    }
    T* yo = y + o * inner;
    for (int64_t j = 0; j < inner; ++j) yo[j] = 0;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < inner; ++j) yo[j] += xo[r * inner + j];
  }
}

AD_REGISTER_OP("sum");
// y = sum over axes of x;  dx = dy broadcast back over the reduced axes.
static void sum_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  bool mask[kMaxDims] = {false};
  for (int i = 0; i < x.dim(); ++i) mask[i] = o.ints[i] != 0;
  ReducePlan p = reduce_plan(x.shape(), mask, false);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    const T* g = static_cast<const T*>(o.scratch);
    if (!gx) return;
    const BlockReduce b = block_reduce(x.shape(), mask);
    if (!b.ok) return for_each_reduce(x.shape(), p, [&](int64_t i, int64_t j) { gx[i] += g[j]; });
    for (int64_t o = 0; o < b.outer; ++o)  // gx[o, r, j] += g[o, j]
      for (int64_t r = 0; r < b.R; ++r) {
        T* gr = gx + (o * b.R + r) * b.inner;
        const T* go = g + o * b.inner;
        for (int64_t j = 0; j < b.inner; ++j) gr[j] += go[j];
      }
  });
}

static Tensor sum_masked(const Tensor& x, const bool* mask, bool keepdim) {
  ReducePlan p = reduce_plan(x.shape(), mask, keepdim);
  Tensor out = make_result("sum", p.out, x.dtype(), {x}, sum_backward);
  for (int i = 0; i < x.dim(); ++i) out.node()->ints[i] = mask[i];  // reduced-axis mask
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* y = out.data<T>();
    const BlockReduce b = block_reduce(x.shape(), mask);
    if (b.ok) return block_sum(b, px, y);
    for (int64_t j = 0; j < p.out.numel(); ++j) y[j] = 0;
    for_each_reduce(x.shape(), p, [&](int64_t i, int64_t j) { y[j] += px[i]; });
  });
  return finish(out);
}

Tensor sum(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  bool mask[kMaxDims] = {false};
  mark_axes("sum", x.shape(), axes, mask);
  return sum_masked(x, mask, keepdim);
}

Tensor sum(const Tensor& x) {
  bool mask[kMaxDims];
  std::fill(mask, mask + kMaxDims, true);
  return sum_masked(x, mask, false);
}

Tensor mean(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  int64_t count = 1;
  for (int a : axes) count *= x.size(normalize_axis("mean", a, x.dim()));
  return mul_scalar(sum(x, axes, keepdim), 1.0 / (double)(count ? count : 1));
}

Tensor mean(const Tensor& x) { return mul_scalar(sum(x), 1.0 / (double)(x.numel() ? x.numel() : 1)); }

// ---- max over an axis ---------------------------------------------------------------------------
// x viewed as [outer, n, inner] around `axis` -> y: [outer, inner] (a size-1 axis kept with
// keepdim). y = max_j x_j; the gradient goes to the FIRST index attaining the max (as in
// PyTorch's max(dim)): dx_{argmax} += g. The argmax offsets (0..n-1) are stored in the node's
// index buffer. A NaN in a row is the row's max (NaN propagates, like torch.max).
AD_REGISTER_OP("max");
static void max_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const int64_t n = o.ints[0], inner = o.ints[1], rows = o.index_count;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T* g = static_cast<const T*>(o.scratch);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t outer_i = r / inner, inner_i = r % inner;
      gx[(outer_i * n + o.index_data[r]) * inner + inner_i] += g[r];
    }
  });
}

Tensor max(const Tensor& x, int axis, bool keepdim) {
  const int ax = normalize_axis("max", axis, x.dim());
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < ax; ++i) outer *= x.size(i);
  for (int i = ax + 1; i < x.dim(); ++i) inner *= x.size(i);
  const int64_t n = x.size(ax), rows = outer * inner;
  if (n == 0) fail("max: axis " + std::to_string(axis) + " of " + x.shape().str() + " is empty");
  if (n > INT32_MAX) fail("max: axis too long for the int32 argmax buffer");
  bool mask[kMaxDims] = {false};
  mask[ax] = true;
  ReducePlan p = reduce_plan(x.shape(), mask, keepdim);
  Tensor out = make_result("max", p.out, x.dtype(), {x}, max_backward);
  Node* nd = out.node();
  nd->ints[0] = n;
  nd->ints[1] = inner;
  nd->index_count = rows;
  int32_t* arg = static_cast<int32_t*>(pool_alloc((size_t)rows * 4));
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* y = out.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const T* base = px + o * n * inner + i;
        T best = base[0];
        int32_t bj = 0;
        for (int64_t j = 1; j < n && !std::isnan(best); ++j) {
          const T v = base[j * inner];
          if (v > best || std::isnan(v)) { best = v; bj = (int32_t)j; }
        }
        y[o * inner + i] = best;
        arg[o * inner + i] = bj;
      }
  });
  if (out.requires_grad()) {
    nd->saved_index_buf = arg;
    nd->index_data = arg;
  } else {
    pool_free(arg, (size_t)rows * 4);
  }
  return finish(out);
}

// ---- topk_mask (not differentiable) ---------------------------------------------------------------
// x: any shape -> same shape and dtype, 1 at the k largest entries over the WHOLE tensor
// (APD's batch top-k over [B, C]), 0 elsewhere. Ties go to the lower flat index, so the
// result is deterministic. O(n) average via nth_element on a pooled index buffer.
Tensor topk_mask(const Tensor& x, int64_t k) {
  const int64_t n = x.numel();
  if (k < 0 || k > n)
    fail("topk_mask: k = " + std::to_string(k) + " is outside [0, " + std::to_string(n) + "] for x " + x.shape().str());
  Tensor out = zeros(x.shape(), x.dtype());  // a plain leaf: never requires a gradient
  if (k == 0) return out;
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    for (int64_t i = 0; i < n; ++i)
      if (std::isnan(px[i]))
        fail("topk_mask: x " + x.shape().str() + " has a NaN at flat index " + std::to_string(i) + " (no order)");
    T* y = out.data<T>();
    if (k == n) {
      for (int64_t i = 0; i < n; ++i) y[i] = 1;
      return;
    }
    int64_t* idx = static_cast<int64_t*>(pool_alloc((size_t)n * sizeof(int64_t)));
    for (int64_t i = 0; i < n; ++i) idx[i] = i;
    // "a before b" = a is larger, or equal with the lower index: a strict total order.
    auto before = [px](int64_t a, int64_t b) { return px[a] > px[b] || (px[a] == px[b] && a < b); };
    std::nth_element(idx, idx + (k - 1), idx + n, before);
    for (int64_t i = 0; i < k; ++i) y[idx[i]] = 1;
    pool_free(idx, (size_t)n * sizeof(int64_t));
  });
  return out;
}

}  // namespace ad
