// Neural-network ops, each fused into one node with a hand-written backward: softmax,
// log_softmax, rms_norm, layer_norm, embedding, rope, attention.
//
// Fusing matters twice: a composed softmax would be five nodes and five full-size buffers,
// and the fused backward formulas (dx = y (g - <g, y>) etc.) are cheaper and more accurate
// than chaining the primitives. tests/test_audit_nn.cpp checks every one against finite
// differences AND against the same computation composed from primitive ops.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "autodiff/broadcast.hpp"
#include "autodiff/gemm.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/rowmath.hpp"

namespace ad {

namespace {

// A tensor viewed as [outer, n, inner] around one axis; a row is the n elements at stride
// `inner` that share an (outer, inner) position.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at(const Shape& s, int axis) {
  AxisSplit a;
  for (int i = 0; i < axis; ++i) a.outer *= s.d[i];
  a.n = s.d[axis];
  for (int i = axis + 1; i < s.nd; ++i) a.inner *= s.d[i];
  return a;
}

void check_float_dtype_match(const char* op, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  if (a.dtype() != b.dtype())
    fail(std::string(op) + ": " + a_name + " is " + dtype_name(a.dtype()) + " " + a.shape().str() + " but " +
         b_name + " is " + dtype_name(b.dtype()) + " " + b.shape().str());
}

// Calls f(row_in, row_out, n) for every contiguous row when inner == 1; otherwise gathers
// each strided row into `buf` (length n), calls f on it and scatters the result back.
// Used by softmax / log_softmax so one row kernel serves every axis.
template <class T, class F>
void for_each_row(const AxisSplit& a, const T* x, T* y, T* buf_in, T* buf_out, F&& f) {
  if (a.inner == 1) {
    for (int64_t o = 0; o < a.outer; ++o) f(x + o * a.n, y + o * a.n);
    return;
  }
  for (int64_t o = 0; o < a.outer; ++o)
    for (int64_t i = 0; i < a.inner; ++i) {
      const int64_t base = o * a.n * a.inner + i;
      for (int64_t j = 0; j < a.n; ++j) buf_in[j] = x[base + j * a.inner];
      f(buf_in, buf_out);
      for (int64_t j = 0; j < a.n; ++j) y[base + j * a.inner] = buf_out[j];
    }
}

// Scratch row buffers for the strided case (pooled: no heap traffic once warm).
struct RowScratch {
  void* p = nullptr;
  size_t bytes = 0;
  RowScratch(size_t b) : bytes(b) { if (b) p = pool_alloc(b); }
  ~RowScratch() { pool_free(p, bytes); }
  RowScratch(const RowScratch&) = delete;
  RowScratch& operator=(const RowScratch&) = delete;
};

}  // namespace

// ---- softmax -------------------------------------------------------------------------------
// x: any shape, normalised over `axis` (ints[0]).  y_j = exp(x_j - max) / sum_k exp(x_k - max)
// Backward (per row): dx_j = y_j (g_j - sum_k g_k y_k).
AD_REGISTER_OP("softmax");
static void softmax_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const AxisSplit a = split_at(o.shape, (int)o.ints[0]);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T *y = static_cast<const T*>(o.data), *g = static_cast<const T*>(o.scratch);
    if (a.inner == 1) {  // contiguous rows (the common last-axis case): a vectorisable loop
      for (int64_t r = 0; r < a.outer; ++r) {
        const T *yr = y + r * a.n, *gr = g + r * a.n;
        T* dr = gx + r * a.n;
        rowmath::add_y_times_g_minus_c(dr, yr, gr, a.n, rowmath::dot(gr, yr, a.n));
      }
      return;
    }
    for (int64_t r = 0; r < a.outer; ++r)
      for (int64_t i = 0; i < a.inner; ++i) {
        const int64_t base = r * a.n * a.inner + i;
        T dot = 0;
        for (int64_t j = 0; j < a.n; ++j) dot += g[base + j * a.inner] * y[base + j * a.inner];
        for (int64_t j = 0; j < a.n; ++j) {
          const int64_t k = base + j * a.inner;
          gx[k] += y[k] * (g[k] - dot);
        }
      }
  });
}

Tensor softmax(const Tensor& x, int axis) {
  if (x.dim() == 0) fail("softmax: input is a scalar; it needs at least one axis");
  const int ax = normalize_axis("softmax", axis, x.dim());
  const AxisSplit a = split_at(x.shape(), ax);
  Tensor out = make_result("softmax", x.shape(), x.dtype(), {x}, softmax_backward);
  out.node()->ints[0] = ax;
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    RowScratch buf(a.inner > 1 ? 2 * a.n * sizeof(T) : 0);
    T* b = static_cast<T*>(buf.p);
    for_each_row<T>(a, x.data<T>(), out.data<T>(), b, b ? b + a.n : nullptr, [&](const T* xr, T* yr) {
      const T shift = rowmath::safe_shift(rowmath::row_max(xr, a.n));
      rowmath::scale(yr, a.n, (T)1 / rowmath::exp_shift_sum(xr, yr, a.n, shift));
    });
  });
  return finish(out);
}

// ---- log_softmax ---------------------------------------------------------------------------
// y_j = x_j - max - log sum_k exp(x_k - max)
// Backward: dx_j = g_j - softmax_j sum_k g_k, with softmax_j = exp(y_j).
AD_REGISTER_OP("log_softmax");
static void log_softmax_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const AxisSplit a = split_at(o.shape, (int)o.ints[0]);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T *y = static_cast<const T*>(o.data), *g = static_cast<const T*>(o.scratch);
    if (a.inner == 1) {  // contiguous rows: softmax = exp(y) through the vector exp
      RowScratch buf((size_t)a.n * sizeof(T));
      T* e = static_cast<T*>(buf.p);
      for (int64_t r = 0; r < a.outer; ++r) {
        const T *yr = y + r * a.n, *gr = g + r * a.n;
        T* dr = gx + r * a.n;
        rowmath::exp_shift_sum(yr, e, a.n, (T)0);
        rowmath::add_a_minus_c_b(dr, gr, e, a.n, rowmath::sum(gr, a.n));
      }
      return;
    }
    for (int64_t r = 0; r < a.outer; ++r)
      for (int64_t i = 0; i < a.inner; ++i) {
        const int64_t base = r * a.n * a.inner + i;
        T gsum = 0;
        for (int64_t j = 0; j < a.n; ++j) gsum += g[base + j * a.inner];
        for (int64_t j = 0; j < a.n; ++j) {
          const int64_t k = base + j * a.inner;
          gx[k] += g[k] - std::exp(y[k]) * gsum;
        }
      }
  });
}

Tensor log_softmax(const Tensor& x, int axis) {
  if (x.dim() == 0) fail("log_softmax: input is a scalar; it needs at least one axis");
  const int ax = normalize_axis("log_softmax", axis, x.dim());
  const AxisSplit a = split_at(x.shape(), ax);
  Tensor out = make_result("log_softmax", x.shape(), x.dtype(), {x}, log_softmax_backward);
  out.node()->ints[0] = ax;
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    RowScratch buf(a.inner > 1 ? 2 * a.n * sizeof(T) : 0);
    T* b = static_cast<T*>(buf.p);
    for_each_row<T>(a, x.data<T>(), out.data<T>(), b, b ? b + a.n : nullptr, [&](const T* xr, T* yr) {
      const T shift = rowmath::safe_shift(rowmath::row_max(xr, a.n));
      const T lse = shift + std::log(rowmath::exp_shift_sum_only(xr, a.n, shift));
      for (int64_t j = 0; j < a.n; ++j) yr[j] = xr[j] - lse;
    });
  });
  return finish(out);
}

// ---- rms_norm ------------------------------------------------------------------------------
// x: [..., D], weight: [D] or undefined.  Per row: r = 1 / sqrt(mean_j x_j^2 + eps),
// xhat = x r, y = xhat * w.   saved[0]: r per row, [R].
// Backward, with gh = g * w:  dw += sum_rows g xhat;
//   dx = r (gh - xhat mean_j(gh_j xhat_j))      (the mean's dependence on x gives the 2nd term)
AD_REGISTER_OP("rms_norm");
static void rms_norm_backward(Node& o) {
  const Tensor &x = o.inputs[0], &w = o.inputs[1];
  const int64_t D = x.size(-1), R = D ? x.numel() / D : 0;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T *px = x.data<T>(), *g = static_cast<const T*>(o.scratch), *rs = o.saved[0].data<T>();
    const T* pw = w.defined() ? w.data<T>() : nullptr;
    T *gx = grad_of<T>(x), *gw = w.defined() ? grad_of<T>(w) : nullptr;
    for (int64_t r = 0; r < R; ++r) {
      const T *xr = px + r * D, *gr = g + r * D;
      const T rr = rs[r];
      if (gw)
        for (int64_t j = 0; j < D; ++j) gw[j] += gr[j] * xr[j] * rr;
      if (!gx) continue;
      T dot = 0;  // sum_j gh_j xhat_j
      for (int64_t j = 0; j < D; ++j) dot += (pw ? gr[j] * pw[j] : gr[j]) * xr[j] * rr;
      const T m = dot / (T)D;
      T* gxr = gx + r * D;
      for (int64_t j = 0; j < D; ++j) gxr[j] += rr * ((pw ? gr[j] * pw[j] : gr[j]) - xr[j] * rr * m);
    }
  });
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  if (x.dim() < 1) fail("rms_norm: input is a scalar; it normalises over the last dim");
  const int64_t D = x.size(-1), R = D ? x.numel() / D : 0;
  if (weight.defined()) {
    if (weight.dim() != 1 || weight.size(0) != D)
      shape_error("rms_norm", x.shape(), weight.shape(), "weight must be [D] with D = x's last dim");
    check_float_dtype_match("rms_norm", x, "x", weight, "weight");
  }
  if (!(eps >= 0)) fail("rms_norm: eps must be >= 0");
  Tensor ins[2] = {x, weight};
  Tensor out = make_result("rms_norm", x.shape(), x.dtype(), ins, 2, rms_norm_backward);
  Tensor rstd = empty(Shape{R}, x.dtype());
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;
    T *y = out.data<T>(), *rs = rstd.data<T>();
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = px + r * D;
      T ss = 0;
      for (int64_t j = 0; j < D; ++j) ss += xr[j] * xr[j];
      const T rr = (T)1 / std::sqrt(ss / (T)D + (T)eps);
      rs[r] = rr;
      T* yr = y + r * D;
      if (pw) for (int64_t j = 0; j < D; ++j) yr[j] = xr[j] * rr * pw[j];
      else    for (int64_t j = 0; j < D; ++j) yr[j] = xr[j] * rr;
    }
  });
  if (out.requires_grad()) out.node()->saved[0] = rstd;
  return finish(out);
}

// ---- layer_norm ----------------------------------------------------------------------------
// x: [..., D], weight/bias: [D] or undefined.  Per row: mu = mean x, var = mean (x - mu)^2
// (biased, as in PyTorch), r = 1/sqrt(var + eps), xhat = (x - mu) r, y = xhat w + b.
// saved[0]: [R, 2] = (mu, r) per row.  Backward with gh = g w:
//   db += sum_rows g;  dw += sum_rows g xhat;  dx = r (gh - mean(gh) - xhat mean(gh xhat))
AD_REGISTER_OP("layer_norm");
static void layer_norm_backward(Node& o) {
  const Tensor &x = o.inputs[0], &w = o.inputs[1], &b = o.inputs[2];
  const int64_t D = x.size(-1), R = D ? x.numel() / D : 0;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T *px = x.data<T>(), *g = static_cast<const T*>(o.scratch), *st = o.saved[0].data<T>();
    const T* pw = w.defined() ? w.data<T>() : nullptr;
    T *gx = grad_of<T>(x), *gw = w.defined() ? grad_of<T>(w) : nullptr, *gb = b.defined() ? grad_of<T>(b) : nullptr;
    for (int64_t r = 0; r < R; ++r) {
      const T *xr = px + r * D, *gr = g + r * D;
      const T mu = st[2 * r], rr = st[2 * r + 1];
      if (gb) for (int64_t j = 0; j < D; ++j) gb[j] += gr[j];
      if (gw) for (int64_t j = 0; j < D; ++j) gw[j] += gr[j] * (xr[j] - mu) * rr;
      if (!gx) continue;
      T sum_gh = 0, sum_ghx = 0;
      for (int64_t j = 0; j < D; ++j) {
        const T gh = pw ? gr[j] * pw[j] : gr[j];
        sum_gh += gh;
        sum_ghx += gh * (xr[j] - mu) * rr;
      }
      const T m1 = sum_gh / (T)D, m2 = sum_ghx / (T)D;
      T* gxr = gx + r * D;
      for (int64_t j = 0; j < D; ++j) {
        const T gh = pw ? gr[j] * pw[j] : gr[j];
        gxr[j] += rr * (gh - m1 - (xr[j] - mu) * rr * m2);
      }
    }
  });
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  if (x.dim() < 1) fail("layer_norm: input is a scalar; it normalises over the last dim");
  const int64_t D = x.size(-1), R = D ? x.numel() / D : 0;
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    const char* name = p == &weight ? "weight" : "bias";
    if (p->dim() != 1 || p->size(0) != D)
      shape_error("layer_norm", x.shape(), p->shape(), p == &weight ? "weight must be [D] with D = x's last dim"
                                                                     : "bias must be [D] with D = x's last dim");
    check_float_dtype_match("layer_norm", x, "x", *p, name);
  }
  if (!(eps >= 0)) fail("layer_norm: eps must be >= 0");
  Tensor ins[3] = {x, weight, bias};
  Tensor out = make_result("layer_norm", x.shape(), x.dtype(), ins, 3, layer_norm_backward);
  Tensor stats = empty(Shape{R, 2}, x.dtype());
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    const T* pw = weight.defined() ? weight.data<T>() : nullptr;
    const T* pb = bias.defined() ? bias.data<T>() : nullptr;
    T *y = out.data<T>(), *st = stats.data<T>();
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = px + r * D;
      T mu = 0;
      for (int64_t j = 0; j < D; ++j) mu += xr[j];
      mu /= (T)D;
      T var = 0;  // two-pass: no cancellation when |mu| >> std
      for (int64_t j = 0; j < D; ++j) var += (xr[j] - mu) * (xr[j] - mu);
      var /= (T)D;
      const T rr = (T)1 / std::sqrt(var + (T)eps);
      st[2 * r] = mu;
      st[2 * r + 1] = rr;
      T* yr = y + r * D;
      for (int64_t j = 0; j < D; ++j) {
        T v = (xr[j] - mu) * rr;
        if (pw) v *= pw[j];
        if (pb) v += pb[j];
        yr[j] = v;
      }
    }
  });
  if (out.requires_grad()) out.node()->saved[0] = stats;
  return finish(out);
}

// ---- embedding -----------------------------------------------------------------------------
// weight: [V, D], ids: any shape (values in [0, V))  ->  [ids.shape..., D]: out[i] = weight[ids[i]].
// Backward: scatter-add, dweight[ids[i]] += g[i] (a repeated id accumulates). The ids are
// copied into the node's index buffer so the caller's Indices may go away.
AD_REGISTER_OP("embedding");
static void embedding_backward(Node& o) {
  const Tensor& w = o.inputs[0];
  const int64_t D = w.size(1);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gw = grad_of<T>(w);
    if (!gw) return;
    const T* g = static_cast<const T*>(o.scratch);
    for (int64_t i = 0; i < o.index_count; ++i) {
      T* row = gw + (int64_t)o.index_data[i] * D;
      const T* gr = g + i * D;
      for (int64_t j = 0; j < D; ++j) row[j] += gr[j];
    }
  });
}

Tensor embedding(const Tensor& weight, const Indices& ids) {
  if (weight.dim() != 2) fail("embedding: weight must be [V, D], got " + weight.shape().str());
  if (ids.shape.nd + 1 > kMaxDims) fail("embedding: ids " + ids.shape.str() + " have too many dims for one more");
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  for (int64_t i = 0; i < n; ++i)
    if (ids.v[(size_t)i] < 0 || ids.v[(size_t)i] >= V)
      fail("embedding: id " + std::to_string(ids.v[(size_t)i]) + " at flat position " + std::to_string(i) +
           " of ids " + ids.shape.str() + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  Shape os = ids.shape;
  os.d[os.nd++] = D;
  Tensor out = make_result("embedding", os, weight.dtype(), {weight}, embedding_backward);
  dispatch(weight.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* pw = weight.data<T>();
    T* y = out.data<T>();
    for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * D, pw + (int64_t)ids.v[(size_t)i] * D, (size_t)D * sizeof(T));
  });
  if (out.requires_grad()) {
    Node* nd = out.node();
    nd->index_count = n;
    nd->saved_index_buf = pool_alloc((size_t)n * 4);
    if (n) std::memcpy(nd->saved_index_buf, ids.v.data(), (size_t)n * 4);
    nd->index_data = static_cast<const int32_t*>(nd->saved_index_buf);
  }
  return finish(out);
}

// ---- rope ----------------------------------------------------------------------------------
// Split-half rotary embedding. x: [..., T, Dh] (a model passes [B, H, T, Dh]), Dh even,
// h = Dh/2. Row t has position p = pos_offset + t; pair i < h rotates (x_i, x_{i+h}) by the
// angle p theta_i, theta_i = base^(-2i/Dh):
//   y_i = x_i cos - x_{i+h} sin,   y_{i+h} = x_i sin + x_{i+h} cos.
// The map is a rotation, so the backward is the inverse rotation of g:
//   dx_i = g_i cos + g_{i+h} sin,  dx_{i+h} = -g_i sin + g_{i+h} cos.
// Angles are computed in double (p theta_i is large for late positions) and rounded once.
// scalars[0] = base, ints[0] = pos_offset.
namespace {
template <class T>
struct RopeTable {  // cos/sin [T, h], pooled
  RowScratch mem;
  T *cos_, *sin_;
  RopeTable(int64_t Tn, int64_t Dh, double base, int64_t off) : mem((size_t)(Tn * Dh) * sizeof(T)) {
    const int64_t h = Dh / 2;
    cos_ = static_cast<T*>(mem.p);
    sin_ = cos_ + Tn * h;
    for (int64_t i = 0; i < h; ++i) {
      const double theta = std::pow(base, -2.0 * (double)i / (double)Dh);
      for (int64_t t = 0; t < Tn; ++t) {
        const double ang = (double)(off + t) * theta;
        cos_[t * h + i] = (T)std::cos(ang);
        sin_[t * h + i] = (T)std::sin(ang);
      }
    }
  }
};
}  // namespace

AD_REGISTER_OP("rope");
static void rope_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  const int64_t Tn = o.shape[-2], Dh = o.shape[-1], h = Dh / 2, rows = (Tn * Dh != 0) ? o.shape.numel() / (Tn * Dh) : 0;
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    RopeTable<T> tab(Tn, Dh, o.scalars[0], o.ints[0]);
    const T* g = static_cast<const T*>(o.scratch);
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t t = 0; t < Tn; ++t) {
        const T *gr = g + (b * Tn + t) * Dh, *c = tab.cos_ + t * h, *s = tab.sin_ + t * h;
        T* dr = gx + (b * Tn + t) * Dh;
        for (int64_t i = 0; i < h; ++i) {
          dr[i] += gr[i] * c[i] + gr[i + h] * s[i];
          dr[i + h] += -gr[i] * s[i] + gr[i + h] * c[i];
        }
      }
  });
}

Tensor rope(const Tensor& x, double base, int64_t pos_offset) {
  if (x.dim() < 2) fail("rope: x must be [..., T, Dh] (e.g. [B, H, T, Dh]), got " + x.shape().str());
  const int64_t Tn = x.size(-2), Dh = x.size(-1);
  if (Dh % 2) fail("rope: head dim Dh = " + std::to_string(Dh) + " of x " + x.shape().str() + " must be even");
  if (!(base > 0)) fail("rope: base must be > 0");
  if (pos_offset < 0) fail("rope: pos_offset must be >= 0");
  const int64_t h = Dh / 2, rows = (Tn * Dh != 0) ? x.numel() / (Tn * Dh) : 0;
  Tensor out = make_result("rope", x.shape(), x.dtype(), {x}, rope_backward);
  out.node()->scalars[0] = base;
  out.node()->ints[0] = pos_offset;
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    RopeTable<T> tab(Tn, Dh, base, pos_offset);
    const T* px = x.data<T>();
    T* y = out.data<T>();
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t t = 0; t < Tn; ++t) {
        const T *xr = px + (b * Tn + t) * Dh, *c = tab.cos_ + t * h, *s = tab.sin_ + t * h;
        T* yr = y + (b * Tn + t) * Dh;
        for (int64_t i = 0; i < h; ++i) {
          yr[i] = xr[i] * c[i] - xr[i + h] * s[i];
          yr[i + h] = xr[i] * s[i] + xr[i + h] * c[i];
        }
      }
  });
  return finish(out);
}

// ---- attention -----------------------------------------------------------------------------
// q: [B, H, Tq, Dh], k, v: [B, H, Tk, Dh]  ->  o: [B, H, Tq, Dh]. Per head (b, h):
//   S = q k^T / sqrt(Dh)           [Tq, Tk]
//   P = softmax_rows(S)            causal: query i sees keys j <= i + (Tk - Tq), i.e. the
//                                  queries are the LAST Tq positions (Tq == Tk: j <= i)
//   o = P v                        [Tq, Dh]
// P is kept for the backward (saved[0], [B, H, Tq, Tk]; masked entries are exact zeros).
// Backward per head, with s = 1/sqrt(Dh):
//   dv += P^T do;   dP = do v^T;   dS = P * (dP - rowsum(P * dP));   dq += s dS k;  dk += s dS^T q
// The four products are gemms; dP/dS live in one pooled [Tq, Tk] scratch.
AD_REGISTER_OP("attention");
namespace {
struct AttnDims {
  int64_t heads = 0, Tq = 0, Tk = 0, Dh = 0, off = 0;
};
AttnDims attention_dims(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("attention: q, k, v must be [B, H, T, Dh]; got q " + q.shape().str() + ", k " + k.shape().str() +
         ", v " + v.shape().str());
  if (k.shape() != v.shape()) shape_error("attention", k.shape(), v.shape(), "k and v must have the same shape");
  if (q.size(0) != k.size(0) || q.size(1) != k.size(1) || q.size(3) != k.size(3))
    shape_error("attention", q.shape(), k.shape(), "q and k must agree in B, H and Dh");
  check_float_dtype_match("attention", q, "q", k, "k");
  check_float_dtype_match("attention", q, "q", v, "v");
  AttnDims d;
  d.heads = q.size(0) * q.size(1);
  d.Tq = q.size(2);
  d.Tk = k.size(2);
  d.Dh = q.size(3);
  if (causal && d.Tq > d.Tk)
    shape_error("attention", q.shape(), k.shape(), "causal attention needs Tq <= Tk (queries are the last positions)");
  d.off = d.Tk - d.Tq;
  return d;
}

// Number of keys query row i may see.
inline int64_t visible_keys(const AttnDims& d, bool causal, int64_t i) { return causal ? i + d.off + 1 : d.Tk; }
}  // namespace

// Causal attention works in blocks of kCausalBlock query rows: block [i0, i1) only needs the
// first min(Tk, i1 + off) keys, so the gemms skip most of the masked upper triangle.
constexpr int64_t kCausalBlock = 64;

template <class F>
static void for_each_query_block(const AttnDims& d, bool causal, F&& f) {  // f(i0, i1, nk)
  const int64_t step = causal ? kCausalBlock : (d.Tq > 0 ? d.Tq : 1);
  for (int64_t i0 = 0; i0 < d.Tq; i0 += step) {
    const int64_t i1 = std::min(d.Tq, i0 + step);
    f(i0, i1, causal ? std::min(d.Tk, i1 + d.off) : d.Tk);
  }
}

static void attention_backward(Node& o) {
  const Tensor &q = o.inputs[0], &k = o.inputs[1], &v = o.inputs[2];
  const bool causal = o.ints[0] != 0;
  const AttnDims d = attention_dims(q, k, v, causal);
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    const T scale = (T)(1.0 / std::sqrt((double)d.Dh));
    const T *Q = q.data<T>(), *K = k.data<T>(), *Vd = v.data<T>(), *P = o.saved[0].data<T>();
    const T* G = static_cast<const T*>(o.scratch);
    T *gQ = grad_of<T>(q), *gK = grad_of<T>(k), *gV = grad_of<T>(v);
    RowScratch mem((size_t)(d.Tq * d.Tk) * sizeof(T));
    T* dS = static_cast<T*>(mem.p);  // [Tq, Tk]: dP, then dS in place
    const int64_t sq = d.Tq * d.Dh, sk = d.Tk * d.Dh, sp = d.Tq * d.Tk, Tk = d.Tk, Dh = d.Dh;
    for (int64_t hd = 0; hd < d.heads; ++hd) {
      const T *Ph = P + hd * sp, *Gh = G + hd * sq, *Qh = Q + hd * sq, *Kh = K + hd * sk, *Vh = Vd + hd * sk;
      for_each_query_block(d, causal, [&](int64_t i0, int64_t i1, int64_t nk) {
        const int64_t m = i1 - i0;
        const T *Pb = Ph + i0 * Tk, *Gb = Gh + i0 * Dh;
        T* Sb = dS + i0 * Tk;
        if (gV) gemm(true, false, nk, Dh, m, (T)1, Pb, Tk, Gb, Dh, (T)1, gV + hd * sk, Dh);
        if (!gQ && !gK) return;
        gemm(false, true, m, nk, Dh, (T)1, Gb, Dh, Vh, Dh, (T)0, Sb, Tk);  // dP
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t nv = visible_keys(d, causal, i);
          const T* pr = Ph + i * Tk;
          T* sr = dS + i * Tk;
          rowmath::p_times_s_minus_c(sr, pr, nv, rowmath::dot(pr, sr, nv));
          for (int64_t j = nv; j < nk; ++j) sr[j] = 0;
        }
        if (gQ) gemm(false, false, m, Dh, nk, scale, Sb, Tk, Kh, Dh, (T)1, gQ + hd * sq + i0 * Dh, Dh);
        if (gK) gemm(true, false, nk, Dh, m, scale, Sb, Tk, Qh + i0 * Dh, Dh, (T)1, gK + hd * sk, Dh);
      });
    }
  });
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  const AttnDims d = attention_dims(q, k, v, causal);
  Tensor out = make_result("attention", q.shape(), q.dtype(), {q, k, v}, attention_backward);
  out.node()->ints[0] = causal ? 1 : 0;
  const bool keep_p = out.requires_grad();
  // With a backward coming, P is stored whole; otherwise one head's worth of scratch.
  Tensor P_all = keep_p ? empty(Shape{q.size(0), q.size(1), d.Tq, d.Tk}, q.dtype()) : Tensor();
  dispatch(q.dtype(), [&](auto z) {
    using T = decltype(z);
    const T scale = (T)(1.0 / std::sqrt((double)d.Dh));
    const T *Q = q.data<T>(), *K = k.data<T>(), *Vd = v.data<T>();
    T* O = out.data<T>();
    RowScratch mem(keep_p ? 0 : (size_t)(d.Tq * d.Tk) * sizeof(T));
    const int64_t sq = d.Tq * d.Dh, sk = d.Tk * d.Dh, sp = d.Tq * d.Tk, Tk = d.Tk, Dh = d.Dh;
    for (int64_t hd = 0; hd < d.heads; ++hd) {
      T* Ph = keep_p ? P_all.data<T>() + hd * sp : static_cast<T*>(mem.p);
      for_each_query_block(d, causal, [&](int64_t i0, int64_t i1, int64_t nk) {
        const int64_t m = i1 - i0;
        T* Pb = Ph + i0 * Tk;
        T* Ob = O + hd * sq + i0 * Dh;
        gemm(false, true, m, nk, Dh, scale, Q + hd * sq + i0 * Dh, Dh, K + hd * sk, Dh, (T)0, Pb, Tk);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t nv = visible_keys(d, causal, i);
          T* pr = Ph + i * Tk;
          const T shift = rowmath::safe_shift(rowmath::row_max(pr, nv));
          rowmath::scale(pr, nv, (T)1 / rowmath::exp_shift_sum(pr, pr, nv, shift));
          for (int64_t j = nv; j < Tk; ++j) pr[j] = 0;  // masked (and never computed) entries
        }
        if (nk > 0) gemm(false, false, m, Dh, nk, (T)1, Pb, Tk, Vd + hd * sk, Dh, (T)0, Ob, Dh);
        else std::memset(Ob, 0, (size_t)(m * Dh) * sizeof(T));
      });
    }
  });
  if (keep_p) out.node()->saved[0] = P_all;
  return finish(out);
}

}  // namespace ad
