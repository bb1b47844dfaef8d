// Elementwise ops. Each op: forward formula, then its derivative right below it.
#include <algorithm>
#include <cmath>

#include "autodiff/broadcast.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/rowmath.hpp"

namespace ad {

Broadcast broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  Broadcast bc;
  if (a == b) {
    bc.out = a;
    bc.same = true;
    return bc;
  }
  int nd = a.nd > b.nd ? a.nd : b.nd;
  int64_t sa[kMaxDims], sb[kMaxDims];
  contiguous_strides(a, sa);
  contiguous_strides(b, sb);
  bc.out.nd = nd;
  for (int i = 0; i < nd; ++i) {
    int ia = i - (nd - a.nd), ib = i - (nd - b.nd);  // right-aligned dims
    int64_t da = ia >= 0 ? a.d[ia] : 1, db = ib >= 0 ? b.d[ib] : 1;
    if (da != db && da != 1 && db != 1) shape_error(op, a, b, "shapes do not broadcast");
    bc.out.d[i] = da == 1 ? db : da;
    bc.stride_a[i] = (ia >= 0 && da != 1) ? sa[ia] : 0;
    bc.stride_b[i] = (ib >= 0 && db != 1) ? sb[ib] : 0;
  }
  return bc;
}

static void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    fail(std::string(op) + ": dtypes differ (" + dtype_name(a.dtype()) + " " + a.shape().str() +
         " and " + dtype_name(b.dtype()) + " " + b.shape().str() + ")");
}

// ---- binary ops with broadcasting ------------------------------------------------------
// fwd(a, b) -> y;  bwd(a, b, g, ga_ref, gb_ref): adds the partials times g.
template <class Fwd>
static Tensor binary(const char* op, const Tensor& a, const Tensor& b, BackwardFn bw, Fwd fwd) {
  check_same_dtype(op, a, b);
  Broadcast bc = broadcast_shapes(op, a.shape(), b.shape());
  Tensor out = make_result(op, bc.out, a.dtype(), {a, b}, bw);
  dispatch(a.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* y = out.data<T>();
    for_each_broadcast(bc, [&](int64_t i, int64_t ia, int64_t ib) { y[i] = fwd(pa[ia], pb[ib]); });
  });
  return finish(out);
}

// dA(a, b, g) and dB(a, b, g): contributions to each input's gradient.
template <class DA, class DB>
static void binary_grad(Node& out, DA dA, DB dB) {
  const Tensor &a = out.inputs[0], &b = out.inputs[1];
  Broadcast bc = broadcast_shapes(out.op, a.shape(), b.shape());
  dispatch(out.dtype, [&](auto z) {
    using T = decltype(z);
    const T *pa = a.data<T>(), *pb = b.data<T>(), *g = static_cast<const T*>(out.scratch);
    T *ga = grad_of<T>(a), *gb = grad_of<T>(b);
    for_each_broadcast(bc, [&](int64_t i, int64_t ia, int64_t ib) {
      if (ga) ga[ia] += dA(pa[ia], pb[ib], g[i]);
      if (gb) gb[ib] += dB(pa[ia], pb[ib], g[i]);
    });
  });
}

AD_REGISTER_OP("add");
Tensor add(const Tensor& a, const Tensor& b) {
  return binary("add", a, b,
      [](Node& o) { binary_grad(o, [](auto, auto, auto g) { return g; }, [](auto, auto, auto g) { return g; }); },
      [](auto x, auto y) { return x + y; });
}

AD_REGISTER_OP("sub");
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary("sub", a, b,
      [](Node& o) { binary_grad(o, [](auto, auto, auto g) { return g; }, [](auto, auto, auto g) { return -g; }); },
      [](auto x, auto y) { return x - y; });
}

AD_REGISTER_OP("mul");
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary("mul", a, b,
      [](Node& o) { binary_grad(o, [](auto, auto y, auto g) { return g * y; }, [](auto x, auto, auto g) { return g * x; }); },
      [](auto x, auto y) { return x * y; });
}

AD_REGISTER_OP("div");
Tensor div(const Tensor& a, const Tensor& b) {
  return binary("div", a, b,
      // d(x/y)/dx = 1/y,  d(x/y)/dy = -x/y^2
      [](Node& o) { binary_grad(o, [](auto, auto y, auto g) { return g / y; }, [](auto x, auto y, auto g) { return -g * x / (y * y); }); },
      [](auto x, auto y) { return x / y; });
}

// ---- unary ops ---------------------------------------------------------------------------
// fwd(x, s) -> y, with s = the op's scalar parameters (node.scalars).
template <class Fwd>
static Tensor unary(const char* op, const Tensor& x, BackwardFn bw, Fwd fwd, double s0 = 0, double s1 = 0) {
  Tensor out = make_result(op, x.shape(), x.dtype(), {x}, bw);
  out.node()->scalars[0] = s0;
  out.node()->scalars[1] = s1;
  const double s[2] = {s0, s1};  // a local copy: y cannot alias it, so the loop vectorises
  dispatch(x.dtype(), [&](auto z) {
    using T = decltype(z);
    const T* px = x.data<T>();
    T* y = out.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) y[i] = fwd(px[i], s);
  });
  return finish(out);
}

// dx(x, y, g, s): gradient contribution for one element (x input, y output, g upstream).
template <class DX>
static void unary_grad(Node& out, DX dx) {
  const Tensor& x = out.inputs[0];
  dispatch(out.dtype, [&](auto z) {
    using T = decltype(z);
    T* gx = grad_of<T>(x);
    if (!gx) return;
    const T *px = x.data<T>(), *y = static_cast<const T*>(out.data), *g = static_cast<const T*>(out.scratch);
    const double s[2] = {out.scalars[0], out.scalars[1]};  // local: gx cannot alias it
    for (int64_t i = 0, n = x.numel(); i < n; ++i) gx[i] += dx(px[i], y[i], g[i], s);
  });
}

AD_REGISTER_OP("add_scalar");
Tensor add_scalar(const Tensor& x, double c) {
  return unary("add_scalar", x,
      [](Node& o) { unary_grad(o, [](auto, auto, auto g, const double*) { return g; }); },
      [](auto v, const double* s) { return v + (decltype(v))s[0]; }, c);
}

AD_REGISTER_OP("mul_scalar");
Tensor mul_scalar(const Tensor& x, double c) {
  return unary("mul_scalar", x,
      [](Node& o) { unary_grad(o, [](auto, auto, auto g, const double* s) { return g * (decltype(g))s[0]; }); },
      [](auto v, const double* s) { return v * (decltype(v))s[0]; }, c);
}

AD_REGISTER_OP("neg");
Tensor neg(const Tensor& x) {
  return unary("neg", x,
      [](Node& o) { unary_grad(o, [](auto, auto, auto g, const double*) { return -g; }); },
      [](auto v, const double*) { return -v; });
}

AD_REGISTER_OP("exp");
Tensor exp(const Tensor& x) {
  return unary("exp", x,
      [](Node& o) { unary_grad(o, [](auto, auto y, auto g, const double*) { return g * y; }); },
      [](auto v, const double*) { return std::exp(v); });
}

AD_REGISTER_OP("log");
Tensor log(const Tensor& x) {
  return unary("log", x,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double*) { return g / v; }); },
      [](auto v, const double*) { return std::log(v); });
}

AD_REGISTER_OP("sqrt");
Tensor sqrt(const Tensor& x) {
  return unary("sqrt", x,
      [](Node& o) { unary_grad(o, [](auto, auto y, auto g, const double*) { return g / (2 * y); }); },
      [](auto v, const double*) { return std::sqrt(v); });
}

AD_REGISTER_OP("abs");
Tensor abs(const Tensor& x) {
  return unary("abs", x,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double*) { return v > 0 ? g : (v < 0 ? -g : 0 * g); }); },
      [](auto v, const double*) { return std::abs(v); });
}

AD_REGISTER_OP("square");
Tensor square(const Tensor& x) {
  return unary("square", x,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double*) { return 2 * v * g; }); },
      [](auto v, const double*) { return v * v; });
}

AD_REGISTER_OP("pow");
Tensor pow(const Tensor& x, double p) {
  // p x^(p-1) is taken as p y / x where x != 0 (y = x^p is stored): one division instead of a
  // second pow. x^0.5 (APD's Schatten p = 1) goes through sqrt.
  return unary("pow", x,
      [](Node& o) { unary_grad(o, [](auto v, auto y, auto g, const double* s) {
        using T = decltype(v);
        return v != 0 ? g * (T)s[0] * (y / v) : g * (T)s[0] * (T)std::pow(v, (T)(s[0] - 1)); }); },
      [](auto v, const double* s) {
        using T = decltype(v);
        return s[0] == 0.5 ? (T)std::sqrt(v) : (T)std::pow(v, (T)s[0]); }, p);
}

AD_REGISTER_OP("relu");
Tensor relu(const Tensor& x) {
  return unary("relu", x,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double*) { return v > 0 ? g : 0 * g; }); },
      [](auto v, const double*) { return v > 0 ? v : 0 * v; });
}

// GELU: float32 goes through the vectorised kernels of rowmath.hpp (libm's tanhf/erff made
// GELU the slowest op of a transformer MLP); float64 -- audits, cross-checks -- uses libm.
AD_REGISTER_OP("gelu_tanh");
// y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi)(x + 0.044715 x^3). Evaluated as y = x s with
// s = (1 + tanh u)/2 = sigmoid(2u): the same number, but 1 + tanh u cancels to 0 for x < -6.
// dy/dx = s + 2 x s (1 - s) sqrt(2/pi)(1 + 3 * 0.044715 x^2)
static void gelu_tanh_backward(Node& o) {
  if (o.dtype == DType::f32) {
    const Tensor& x = o.inputs[0];
    if (float* gx = grad_of<float>(x))
      rowmath::gelu_tanh_backward(x.data<float>(), static_cast<const float*>(o.scratch), gx, x.numel());
    return;
  }
  unary_grad(o, [](auto v, auto, auto g, const double*) {
    using T = decltype(v);
    const T c = (T)0.7978845608028654, k = (T)0.044715;
    const T e = std::exp(-2 * c * (v + k * v * v * v)), sg = 1 / (1 + e);  // 1 - sg = e sg
    return g * (sg + 2 * v * sg * (e * sg) * c * (1 + 3 * k * v * v)); });
}

Tensor gelu_tanh(const Tensor& x) {
  if (x.dtype() == DType::f32) {
    Tensor out = make_result("gelu_tanh", x.shape(), x.dtype(), {x}, gelu_tanh_backward);
    rowmath::gelu_tanh_forward(x.data<float>(), out.data<float>(), x.numel());
    return finish(out);
  }
  return unary("gelu_tanh", x, gelu_tanh_backward,
      [](auto v, const double*) {
        using T = decltype(v);
        const T c = (T)0.7978845608028654, k = (T)0.044715;
        return v / (1 + std::exp(-2 * c * (v + k * v * v * v))); });
}

AD_REGISTER_OP("gelu_erf");
// y = x Phi(x);  dy/dx = Phi(x) + x phi(x),  Phi(x) = 0.5 (1 + erf(x / sqrt 2)),
// phi(x) = exp(-x^2 / 2) / sqrt(2 pi). The kernels (float32: 8-lane A&S 7.1.26, shared with the
// fused CI functions; float64: std::erf / std::exp) and their contract: rowmath.hpp.
static void gelu_erf_backward(Node& o) {
  const Tensor& x = o.inputs[0];
  dispatch(o.dtype, [&](auto zero) {
    using T = decltype(zero);
    if (T* gx = grad_of<T>(x)) rowmath::gelu_erf_backward(x.data<T>(), static_cast<const T*>(o.scratch), gx, x.numel());
  });
}

Tensor gelu_erf(const Tensor& x) {
  Tensor out = make_result("gelu_erf", x.shape(), x.dtype(), {x}, gelu_erf_backward);
  dispatch(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    rowmath::gelu_erf_forward(x.data<T>(), out.data<T>(), x.numel());
  });
  return finish(out);
}

AD_REGISTER_OP("sigmoid");
Tensor sigmoid(const Tensor& x) {
  return unary("sigmoid", x,
      [](Node& o) { unary_grad(o, [](auto, auto y, auto g, const double*) { return g * y * (1 - y); }); },
      [](auto v, const double*) {
        using T = decltype(v);  // split by sign so exp never overflows
        if (v >= 0) return (T)1 / (1 + std::exp(-v));
        T e = std::exp(v);
        return e / (1 + e); });
}

AD_REGISTER_OP("tanh");
Tensor tanh(const Tensor& x) {
  return unary("tanh", x,
      [](Node& o) { unary_grad(o, [](auto, auto y, auto g, const double*) { return g * (1 - y * y); }); },
      [](auto v, const double*) { return std::tanh(v); });
}

AD_REGISTER_OP("clamp");
Tensor clamp(const Tensor& x, double lo, double hi) {
  if (lo > hi) fail("clamp: lo " + std::to_string(lo) + " > hi " + std::to_string(hi));
  // Gradient passes where lo <= x <= hi (boundaries included, as in PyTorch).
  return unary("clamp", x,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double* s) {
        return (v >= (decltype(v))s[0] && v <= (decltype(v))s[1]) ? g : 0 * g; }); },
      [](auto v, const double* s) {
        using T = decltype(v);
        return v < (T)s[0] ? (T)s[0] : (v > (T)s[1] ? (T)s[1] : v); }, lo, hi);
}

AD_REGISTER_OP("lower_leaky_hard_sigmoid");
Tensor lower_leaky_hard_sigmoid(const Tensor& z, double alpha) {
  // Forward: clamp(z, 0, 1). Backward (not the true derivative, by design -- METHODS 3.2):
  //   0 < z <= 1: g;   z > 1: 0;   z <= 0: alpha g if g < 0 (only raises a dead CI), else 0.
  return unary("lower_leaky_hard_sigmoid", z,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double* s) {
        using T = decltype(v);
        if (v > 0) return v <= 1 ? g : (T)0;
        return g < 0 ? (T)s[0] * g : (T)0; }); },
      [](auto v, const double*) {
        using T = decltype(v);
        return v < 0 ? (T)0 : (v > 1 ? (T)1 : v); }, alpha);
}

AD_REGISTER_OP("upper_leaky_hard_sigmoid");
Tensor upper_leaky_hard_sigmoid(const Tensor& z, double alpha) {
  // y = clamp(z, 0, 1) for z <= 1;  1 + alpha (z - 1) for z > 1.
  return unary("upper_leaky_hard_sigmoid", z,
      [](Node& o) { unary_grad(o, [](auto v, auto, auto g, const double* s) {
        using T = decltype(v);
        return v > 1 ? (T)s[0] * g : (v > 0 ? g : (T)0); }); },
      [](auto v, const double* s) {
        using T = decltype(v);
        return v > 1 ? 1 + (T)s[0] * (v - 1) : (v > 0 ? v : (T)0); }, alpha);
}

// ---- where -------------------------------------------------------------------------------
// cond, a, b: broadcast together to the output shape; y = cond != 0 ? a : b.
// da += g where cond != 0, db += g where cond == 0 (summed over broadcast dims by the walk);
// cond gets no gradient: it is kept in saved[0], not recorded as an input. cond may have any
// dtype (a float mask next to float64 inputs is fine).
namespace {
struct WherePlan {
  Shape out;
  int64_t stride[3][kMaxDims] = {{0}};  // cond, a, b element strides aligned to out
};
WherePlan where_plan(const Shape& c, const Shape& a, const Shape& b) {
  WherePlan p;
  const Shape* s[3] = {&c, &a, &b};
  int nd = std::max(c.nd, std::max(a.nd, b.nd));
  p.out.nd = nd;
  for (int i = 0; i < nd; ++i) {
    int64_t d = 1;
    for (int k = 0; k < 3; ++k) {
      int j = i - (nd - s[k]->nd);
      int64_t dk = j >= 0 ? s[k]->d[j] : 1;
      if (dk != 1) {
        if (d != 1 && d != dk)
          fail("where: shapes do not broadcast (cond " + c.str() + ", a " + a.str() + ", b " + b.str() + ")");
        d = dk;
      }
    }
    p.out.d[i] = d;
  }
  for (int k = 0; k < 3; ++k) {
    int64_t st[kMaxDims];
    contiguous_strides(*s[k], st);
    for (int i = 0; i < nd; ++i) {
      int j = i - (nd - s[k]->nd);
      p.stride[k][i] = (j >= 0 && s[k]->d[j] != 1) ? st[j] : 0;
    }
  }
  return p;
}
// f(i_out, i_cond, i_a, i_b) for every output element in row-major order.
template <class F>
void for_each_where(const WherePlan& p, F&& f) {
  const int nd = p.out.nd;
  const int64_t n = p.out.numel();
  if (n == 0) return;
  int64_t idx[kMaxDims] = {0}, off[3] = {0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    f(i, off[0], off[1], off[2]);
    for (int d = nd - 1; d >= 0; --d) {
      for (int k = 0; k < 3; ++k) off[k] += p.stride[k][d];
      if (++idx[d] < p.out.d[d]) break;
      for (int k = 0; k < 3; ++k) off[k] -= p.stride[k][d] * p.out.d[d];
      idx[d] = 0;
    }
  }
}
// cond as a 0/1 byte per cond element, whatever its dtype.
template <class F>
void with_cond(const Tensor& c, F&& f) {
  dispatch(c.dtype(), [&](auto z) {
    using C = decltype(z);
    const C* pc = c.data<C>();
    f([pc](int64_t i) { return pc[i] != 0; });
  });
}
}  // namespace

AD_REGISTER_OP("where");
static void where_backward(Node& o) {
  const Tensor &a = o.inputs[0], &b = o.inputs[1], &c = o.saved[0];
  WherePlan p = where_plan(c.shape(), a.shape(), b.shape());
  dispatch(o.dtype, [&](auto z) {
    using T = decltype(z);
    T *ga = grad_of<T>(a), *gb = grad_of<T>(b);
    const T* g = static_cast<const T*>(o.scratch);
    with_cond(c, [&](auto take_a) {
      for_each_where(p, [&](int64_t i, int64_t ic, int64_t ia, int64_t ib) {
        if (take_a(ic)) { if (ga) ga[ia] += g[i]; }
        else if (gb) gb[ib] += g[i];
      });
    });
  });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_dtype("where", a, b);
  WherePlan p = where_plan(cond.shape(), a.shape(), b.shape());
  Tensor out = make_result("where", p.out, a.dtype(), {a, b}, where_backward);
  dispatch(a.dtype(), [&](auto z) {
    using T = decltype(z);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T* y = out.data<T>();
    with_cond(cond, [&](auto take_a) {
      for_each_where(p, [&](int64_t i, int64_t ic, int64_t ia, int64_t ib) { y[i] = take_a(ic) ? pa[ia] : pb[ib]; });
    });
  });
  if (out.requires_grad()) out.node()->saved[0] = detach(cond);
  return finish(out);
}

}  // namespace ad
