// Reverse-mode differentiation over the define-by-run graph.
//
//  backward(loss)                    d loss / d leaf, accumulated (+=) into every leaf's .grad
//  backward(y, dy)                   vector-Jacobian product with upstream gradient dy
//  grad(y, {a, b}, dy)               returns d<y,dy>/da, d<y,dy>/db for ANY nodes of the graph
//                                    (leaves or intermediates) and leaves every .grad untouched
//
// Order: one iterative depth-first search from the output gives a topological order (no
// recursion, so 100k-node chains are fine); nodes are then visited in reverse, each op's
// backward adding its inputs' gradients. retain_graph=false frees the graph's references
// after the pass; a later pass through it is an error naming the op.
//
// How an op is written (see ops_elementwise.cpp for many short examples):
//
//   Tensor y = make_result("relu", x.shape(), x.dtype(), {x}, relu_backward);
//   ... compute y's data ...
//   return finish(y);
//
// make_result records inputs + backward only when recording is on and an input needs a
// gradient. A backward function reads out.grad and ADDS into grad_buffer(out.inputs[i]).
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include "autodiff/tensor.hpp"

namespace ad {

Tensor make_result(const char* op, const Shape& shape, DType dtype,
                   std::initializer_list<Tensor> inputs, BackwardFn backward);
Tensor make_result(const char* op, const Shape& shape, DType dtype, const Tensor* inputs,
                   int n_inputs, BackwardFn backward);
// Applies the NaN guard (if on) to a freshly computed op output, then returns it.
Tensor finish(Tensor out);

// During backward: the gradient buffer of `t` to accumulate into (zero-filled on first use),
// or nullptr when `t` needs no gradient.
void* grad_buffer(const Tensor& t);
template <class T> inline T* grad_of(const Tensor& t) { return static_cast<T*>(grad_buffer(t)); }

void backward(const Tensor& output, const Tensor& grad_output = Tensor(), bool retain_graph = false);
std::vector<Tensor> grad(const Tensor& output, const std::vector<Tensor>& wrt,
                         const Tensor& grad_output = Tensor(), bool retain_graph = true);

// Returns a leaf that shares x's data and records nothing.
Tensor detach(const Tensor& x);

// ---- NaN guard -------------------------------------------------------------------------
// When on, every op output (forward) and every gradient an op produces (backward) is
// checked; the first non-finite value throws ad::Error naming the op, the pass, the
// shapes and the offending index. Off by default (it costs one pass over each tensor).
void set_nan_guard(bool on);
bool nan_guard();
struct NanGuardScope {
  explicit NanGuardScope(bool on = true);
  ~NanGuardScope();
  bool prev;
};

// ---- op profile ------------------------------------------------------------------------
// When on, every op's forward (make_result .. finish) and backward call is timed and
// counted per op name; `pd bench NAME --profile` prints the table. Off by default (two
// clock reads per op when on). Nested ops (an op built from others) count in both.
struct OpTime {
  std::string op;
  int64_t fwd_calls = 0, bwd_calls = 0;
  double fwd_s = 0, bwd_s = 0;
};
void set_op_profile(bool on);
void reset_op_profile();
std::vector<OpTime> op_profile();  // sorted by fwd_s + bwd_s, largest first

// ---- op registry ------------------------------------------------------------------------
// Every differentiable op name registers itself (AD_REGISTER_OP in its .cpp); the gradient
// audit compares this list with the ops its cases exercised, so an op without an audit
// case fails the test suite.
std::vector<std::string>& registered_ops();
struct OpRegistration {
  explicit OpRegistration(const char* name) { registered_ops().push_back(name); }
};
#define AD_CONCAT2(a, b) a##b
#define AD_CONCAT(a, b) AD_CONCAT2(a, b)
#define AD_REGISTER_OP(name) \
  static ::ad::OpRegistration AD_CONCAT(ad_op_registration_, __LINE__)(name)

// Audit hook: when set, called with the op name of every node that runs a backward.
using BackwardObserver = void (*)(const char* op);
void set_backward_observer(BackwardObserver obs);

// Test hook: every node of op `op` runs its backward on `factor` times its output gradient,
// so that op's backward returns `factor` x the true gradients of its inputs (1.01: a 1%
// error in one backward). Tests use it to show that a gradient audit catches a wrong
// backward; nullptr turns it off.
void set_backward_perturbation(const char* op, double factor);

}  // namespace ad
