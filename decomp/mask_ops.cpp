#include "decomp/mask_ops.hpp"

#include <cstring>
#include <string>

#include "autodiff/gemm.hpp"

namespace decomp {

using ad::Tensor;

AD_REGISTER_OP("stochastic_mask");
// m = g + (1 - g) r   (g, r: [n], flat)
Tensor stochastic_mask(const Tensor& g, const Tensor& r) {
  if (g.shape() != r.shape() || g.dtype() != r.dtype())
    ad::fail("stochastic_mask: g " + g.shape().str() + " and r " + r.shape().str() + " need one shape and dtype");
  Tensor m = ad::make_result("stochastic_mask", g.shape(), g.dtype(), {g, r}, [](ad::Node& o) {
    // dg += gm (1 - r),  dr += gm (1 - g)
    const Tensor &g = o.inputs[0], &r = o.inputs[1];
    ad::dispatch(o.dtype, [&](auto zero) {
      using T = decltype(zero);
      const T *pg = g.data<T>(), *pr = r.data<T>(), *gm = static_cast<const T*>(o.scratch);
      const int64_t n = g.numel();
      if (T* gg = ad::grad_of<T>(g))
        for (int64_t i = 0; i < n; ++i) gg[i] += gm[i] * (1 - pr[i]);
      if (T* gr = ad::grad_of<T>(r))
        for (int64_t i = 0; i < n; ++i) gr[i] += gm[i] * (1 - pg[i]);
    });
  });
  ad::dispatch(g.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *pg = g.data<T>(), *pr = r.data<T>();
    T* pm = m.data<T>();
    for (int64_t i = 0, n = g.numel(); i < n; ++i) pm[i] = pg[i] + (1 - pg[i]) * pr[i];
  });
  return ad::finish(m);
}

AD_REGISTER_OP("masked_component_acts");
// a[n, c] = h[n, c] (m[n, c] - m_delta[n])   (h, m: [N, C] flat; m_delta: [N] or absent)
Tensor masked_component_acts(const Tensor& h, const Tensor& m, const Tensor& m_delta) {
  const bool delta = m_delta.defined();
  if (h.shape() != m.shape() || h.dtype() != m.dtype() || h.dim() < 1 ||
      (delta && (m_delta.dtype() != h.dtype() || m_delta.dim() != h.dim() || m_delta.size(-1) != 1 ||
                 m_delta.numel() * h.size(-1) != h.numel())))
    ad::fail("masked_component_acts: expected h and m [..., C] and m_delta [..., 1]; got h " + h.shape().str() +
             ", m " + m.shape().str() + (delta ? ", m_delta " + m_delta.shape().str() : std::string(", no m_delta")));
  Tensor a = ad::make_result("masked_component_acts", h.shape(), h.dtype(), {h, m, m_delta}, [](ad::Node& o) {
    // dh += g (m - m_delta),  dm += g h,  dm_delta[n] -= sum_c g[n, c] h[n, c]
    const Tensor &h = o.inputs[0], &m = o.inputs[1], &md = o.inputs[2];
    const int64_t C = h.size(-1), N = h.numel() / C;
    ad::dispatch(o.dtype, [&](auto zero) {
      using T = decltype(zero);
      const T *ph = h.data<T>(), *pm = m.data<T>(), *ga = static_cast<const T*>(o.scratch);
      const T* pmd = md.defined() ? md.data<T>() : nullptr;
      T *gh = ad::grad_of<T>(h), *gm = ad::grad_of<T>(m), *gmd = ad::grad_of<T>(md);
      for (int64_t n = 0; n < N; ++n) {
        const T d = pmd ? pmd[n] : T(0);
        const T *hr = ph + n * C, *mr = pm + n * C, *gr = ga + n * C;
        if (gh)
          for (int64_t c = 0; c < C; ++c) gh[n * C + c] += gr[c] * (mr[c] - d);
        if (gm)
          for (int64_t c = 0; c < C; ++c) gm[n * C + c] += gr[c] * hr[c];
        if (gmd) {
          T acc = 0;
          for (int64_t c = 0; c < C; ++c) acc += gr[c] * hr[c];
          gmd[n] -= acc;
        }
      }
    });
  });
  const int64_t C = h.size(-1), N = h.numel() / C;
  ad::dispatch(h.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *ph = h.data<T>(), *pm = m.data<T>(), *pmd = delta ? m_delta.data<T>() : nullptr;
    T* pa = a.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      const T d = pmd ? pmd[n] : T(0);
      for (int64_t c = 0; c < C; ++c) pa[n * C + c] = ph[n * C + c] * (pm[n * C + c] - d);
    }
  });
  return ad::finish(a);
}

AD_REGISTER_OP("masked_layer_output");
// out[n, :] = a[n, :] op(U) + m_delta[n] xw[n, :]   (a: [N, C], op(U): [C, D], xw: [N, D] flat)
Tensor masked_layer_output(const Tensor& a, const Tensor& U, bool trans_u, const Tensor& m_delta, const Tensor& xw) {
  const int64_t C = a.dim() >= 1 ? a.size(-1) : 0, N = C ? a.numel() / C : 0;
  const int64_t D = U.dim() == 2 ? U.size(trans_u ? 0 : 1) : -1;
  ad::Shape os = a.shape();
  if (a.dim() >= 1) os[-1] = D;
  if (a.dim() < 1 || U.dim() != 2 || U.size(trans_u ? 1 : 0) != C || xw.shape() != os || m_delta.dim() != a.dim() ||
      m_delta.size(-1) != 1 || m_delta.numel() != N || a.dtype() != U.dtype() || a.dtype() != xw.dtype() ||
      a.dtype() != m_delta.dtype())
    ad::fail("masked_layer_output: expected a [..., C], U [C, d_out]" + std::string(trans_u ? " (stored transposed)" : "") +
             ", m_delta [..., 1] and xw [..., d_out] of one dtype; got a " + a.shape().str() + ", U " + U.shape().str() +
             ", m_delta " + m_delta.shape().str() + ", xw " + xw.shape().str());
  Tensor out = ad::make_result("masked_layer_output", os, a.dtype(), {a, U, m_delta, xw}, [](ad::Node& o) {
    const Tensor &a = o.inputs[0], &U = o.inputs[1], &md = o.inputs[2], &xw = o.inputs[3];
    const bool tu = o.ints[0];
    const int64_t C = a.size(-1), N = a.numel() / C, D = U.size(tu ? 0 : 1);
    ad::dispatch(o.dtype, [&](auto zero) {
      using T = decltype(zero);
      const T *pa = a.data<T>(), *pu = U.data<T>(), *pmd = md.data<T>(), *pxw = xw.data<T>();
      const T* g = static_cast<const T*>(o.scratch);
      if (T* ga = ad::grad_of<T>(a))  // da += g op(U)^T: [N, D] x [D, C]
        ad::gemm(false, !tu, N, C, D, T(1), g, D, pu, tu ? C : D, T(1), ga, C);
      if (T* gu = ad::grad_of<T>(U)) {  // dU += a^T g: [C, N] x [N, D]  (or its transpose g^T a)
        if (!tu) ad::gemm(true, false, C, D, N, T(1), pa, C, g, D, T(1), gu, D);
        else     ad::gemm(true, false, D, C, N, T(1), g, D, pa, C, T(1), gu, C);
      }
      T *gmd = ad::grad_of<T>(md), *gxw = ad::grad_of<T>(xw);
      for (int64_t n = 0; n < N; ++n) {
        const T *gr = g + n * D, *xr = pxw + n * D;
        if (gmd) {
          T acc = 0;
          for (int64_t j = 0; j < D; ++j) acc += gr[j] * xr[j];
          gmd[n] += acc;
        }
        if (gxw) {
          T* gx = gxw + n * D;
          const T d = pmd[n];
          for (int64_t j = 0; j < D; ++j) gx[j] += d * gr[j];
        }
      }
    });
  });
  out.node()->ints[0] = trans_u;
  ad::dispatch(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *pmd = m_delta.data<T>(), *pxw = xw.data<T>();
    T* po = out.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      const T d = pmd[n];
      for (int64_t j = 0; j < D; ++j) po[n * D + j] = d * pxw[n * D + j];
    }
    ad::gemm(false, trans_u, N, D, C, T(1), a.data<T>(), C, U.data<T>(), trans_u ? C : D, T(1), po, D);
  });
  return ad::finish(out);
}

}  // namespace decomp

namespace decomp {

AD_REGISTER_OP("masked_layer_output_rows");
namespace {
// Backward of masked_layer_output_rows; saved[0] = route [R], index_data = rows.
void masked_layer_output_rows_backward(ad::Node& o) {
  const Tensor &a = o.inputs[0], &U = o.inputs[1], &md = o.inputs[2], &xw = o.inputs[3];
  const Tensor& route = o.saved[0];
  const bool tu = o.ints[0];
  const int64_t C = a.size(-1), R = a.numel() / C, D = U.size(tu ? 0 : 1), N = xw.numel() / D;
  const int32_t* rows = o.index_data;
  ad::dispatch(o.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T *pa = a.data<T>(), *pu = U.data<T>(), *pxw = xw.data<T>(), *pr = route.data<T>();
    const T* pmd = md.defined() ? md.data<T>() : nullptr;
    const T* g = static_cast<const T*>(o.scratch);
    T *ga = ad::grad_of<T>(a), *gu = ad::grad_of<T>(U), *gmd = ad::grad_of<T>(md), *gxw = ad::grad_of<T>(xw);
    if (gxw) {  // unrouted rows pass dout through; routed rows weigh it by r m_delta + 1 - r
      for (int64_t n = 0, i = 0; n < N; ++n) {
        const T* gr = g + n * D;
        T* gx = gxw + n * D;
        if (i < R && rows[i] == n) {
          const T r = pr[i], w = r * (pmd ? pmd[i] : T(0)) + (1 - r);
          for (int64_t j = 0; j < D; ++j) gx[j] += w * gr[j];
          ++i;
        } else {
          for (int64_t j = 0; j < D; ++j) gx[j] += gr[j];
        }
      }
    }
    if (!ga && !gu && !gmd) return;
    Tensor gp = ad::empty({R, D}, o.dtype);  // r_i dout[rows[i]], packed
    T* pg = gp.data<T>();
    for (int64_t i = 0; i < R; ++i) {
      const T r = pr[i];
      const T* gr = g + (int64_t)rows[i] * D;
      for (int64_t j = 0; j < D; ++j) pg[i * D + j] = r * gr[j];
    }
    if (ga) ad::gemm(false, !tu, R, C, D, T(1), pg, D, pu, tu ? C : D, T(1), ga, C);
    if (gu) {
      if (!tu) ad::gemm(true, false, C, D, R, T(1), pa, C, pg, D, T(1), gu, D);
      else     ad::gemm(true, false, D, C, R, T(1), pg, D, pa, C, T(1), gu, C);
    }
    if (gmd)
      for (int64_t i = 0; i < R; ++i) {
        const T *gr = pg + i * D, *xr = pxw + (int64_t)rows[i] * D;
        T acc = 0;
        for (int64_t j = 0; j < D; ++j) acc += gr[j] * xr[j];
        gmd[i] += acc;
      }
  });
}
}  // namespace

Tensor masked_layer_output_rows(const Tensor& a, const Tensor& U, bool trans_u, const Tensor& m_delta, const Tensor& xw,
                                const ad::Indices& rows, const Tensor& route) {
  const int64_t R = rows.numel(), C = a.dim() == 2 ? a.size(1) : -1, D = U.dim() == 2 ? U.size(trans_u ? 0 : 1) : -1;
  const int64_t N = xw.dim() >= 1 && D > 0 && xw.size(-1) == D ? xw.numel() / D : -1;
  const bool delta = m_delta.defined();
  if (a.dim() != 2 || a.size(0) != R || U.dim() != 2 || U.size(trans_u ? 1 : 0) != C || N < 0 ||
      route.dim() != 1 || route.numel() != R || (delta && (m_delta.dim() != 2 || m_delta.size(0) != R || m_delta.size(1) != 1)) ||
      a.dtype() != U.dtype() || a.dtype() != xw.dtype() || a.dtype() != route.dtype() || (delta && a.dtype() != m_delta.dtype()))
    ad::fail("masked_layer_output_rows: expected a [R, C], U [C, d_out]" + std::string(trans_u ? " (stored transposed)" : "") +
             ", m_delta [R, 1], xw [..., d_out] and route [R] of one dtype for R = " + std::to_string(R) + " rows; got a " +
             a.shape().str() + ", U " + U.shape().str() + (delta ? ", m_delta " + m_delta.shape().str() : std::string()) +
             ", xw " + xw.shape().str() + ", route " + route.shape().str());
  if (route.requires_grad()) ad::fail("masked_layer_output_rows: route is a constant and must not require a gradient");
  for (int64_t i = 0; i < R; ++i)
    if (rows.v[(size_t)i] < 0 || rows.v[(size_t)i] >= N || (i > 0 && rows.v[(size_t)i] <= rows.v[(size_t)i - 1]))
      ad::fail("masked_layer_output_rows: rows must be strictly ascending in [0, " + std::to_string(N) + "); row " +
               std::to_string(i) + " is " + std::to_string(rows.v[(size_t)i]));
  Tensor out = ad::make_result("masked_layer_output_rows", xw.shape(), a.dtype(), {a, U, m_delta, xw},
                               masked_layer_output_rows_backward);
  ad::dispatch(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *pxw = xw.data<T>(), *pr = route.data<T>(), *pmd = delta ? m_delta.data<T>() : nullptr;
    T* po = out.data<T>();
    for (int64_t n = 0, i = 0; n < N; ++n) {  // the unrouted rows: xw
      if (i < R && rows.v[(size_t)i] == n) ++i;
      else std::memcpy(po + n * D, pxw + n * D, (size_t)D * sizeof(T));
    }
    if (R == 0) return;
    Tensor op = ad::empty({R, D}, a.dtype());  // a op(U) + m_delta xw on the routed rows, packed
    T* pp = op.data<T>();
    for (int64_t i = 0; i < R; ++i) {
      const T d = pmd ? pmd[i] : T(0);
      const T* xr = pxw + (int64_t)rows.v[(size_t)i] * D;
      for (int64_t j = 0; j < D; ++j) pp[i * D + j] = d * xr[j];
    }
    ad::gemm(false, trans_u, R, D, C, T(1), a.data<T>(), C, U.data<T>(), trans_u ? C : D, T(1), pp, D);
    for (int64_t i = 0; i < R; ++i) {
      const T r = pr[i];
      const int64_t off = (int64_t)rows.v[(size_t)i] * D;
      for (int64_t j = 0; j < D; ++j) po[off + j] = r * pp[i * D + j] + (1 - r) * pxw[off + j];
    }
  });
  if (out.requires_grad()) {
    ad::Node* nd = out.node();
    nd->ints[0] = trans_u;
    nd->saved[0] = route;
    nd->index_count = R;
    nd->saved_index_buf = ad::pool_alloc((size_t)R * 4);
    if (R) std::memcpy(nd->saved_index_buf, rows.v.data(), (size_t)R * 4);
    nd->index_data = static_cast<const int32_t*>(nd->saved_index_buf);
  }
  return ad::finish(out);
}

}  // namespace decomp
