// Shape ops. reshape is a view (shares storage); the rest copy.
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

}  // namespace ad
