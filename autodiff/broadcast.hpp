// Numpy-style broadcasting of two shapes, and the index walk that elementwise ops and
// their backwards share. Broadcast dims get stride 0, so the same walk that reads a[ia]
// in forward ADDS into ga[ia] in backward -- which is exactly the sum over broadcast dims.
#pragma once
#include "autodiff/tensor.hpp"

namespace ad {

struct Broadcast {
  Shape out;
  int64_t stride_a[kMaxDims] = {0};  // element strides of a and b aligned to `out`'s dims
  int64_t stride_b[kMaxDims] = {0};
  bool same = false;                 // a, b and out all have one shape: a flat loop suffices
};

Broadcast broadcast_shapes(const char* op, const Shape& a, const Shape& b);

// Calls f(i_out, i_a, i_b) for every output element, in row-major order of out.
template <class F>
inline void for_each_broadcast(const Broadcast& bc, F&& f) {
  const int64_t n = bc.out.numel();
  if (bc.same) {
    for (int64_t i = 0; i < n; ++i) f(i, i, i);
    return;
  }
  const int nd = bc.out.nd;
  if (nd == 0) { f(0, 0, 0); return; }
  const int64_t inner = bc.out.d[nd - 1], sa = bc.stride_a[nd - 1], sb = bc.stride_b[nd - 1];
  int64_t idx[kMaxDims] = {0};
  int64_t ia = 0, ib = 0;
  for (int64_t i = 0; i < n; i += inner) {
    for (int64_t j = 0; j < inner; ++j) f(i + j, ia + j * sa, ib + j * sb);
    // advance the outer multi-index (dims 0..nd-2) like an odometer
    for (int d = nd - 2; d >= 0; --d) {
      ia += bc.stride_a[d];
      ib += bc.stride_b[d];
      if (++idx[d] < bc.out.d[d]) break;
      ia -= bc.stride_a[d] * bc.out.d[d];
      ib -= bc.stride_b[d] * bc.out.d[d];
      idx[d] = 0;
    }
  }
}

// Row-major element strides of a shape.
inline void contiguous_strides(const Shape& s, int64_t* strides) {
  int64_t st = 1;
  for (int i = s.nd - 1; i >= 0; --i) {
    strides[i] = st;
    st *= s.d[i];
  }
}

inline int normalize_axis(const char* op, int axis, int nd) {
  int a = axis < 0 ? axis + nd : axis;
  if (a < 0 || a >= nd)
    fail(std::string(op) + ": axis " + std::to_string(axis) + " out of range for a " +
         std::to_string(nd) + "-d tensor");
  return a;
}

}  // namespace ad
