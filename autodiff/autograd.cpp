#include "autodiff/autograd.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>

namespace ad {

// ---- op profile: per-op-name wall time (off unless set_op_profile(true)) ----------------
static bool g_profile = false;
static std::map<std::string, OpTime>& profile_table() {
  static std::map<std::string, OpTime> t;
  return t;
}
static double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// Forward timing: make_result pushes (node, start); finish pops it (and any op above it
// that never called finish).
static std::vector<std::pair<const Node*, double>>& open_ops() {
  static std::vector<std::pair<const Node*, double>> s;
  return s;
}
void set_op_profile(bool on) { g_profile = on; }
void reset_op_profile() { profile_table().clear(), open_ops().clear(); }
std::vector<OpTime> op_profile() {
  std::vector<OpTime> v;
  for (auto& kv : profile_table()) v.push_back(kv.second);
  std::sort(v.begin(), v.end(), [](const OpTime& a, const OpTime& b) { return a.fwd_s + a.bwd_s > b.fwd_s + b.bwd_s; });
  return v;
}
static OpTime& profile_entry(const char* op) {
  OpTime& e = profile_table()[op];
  if (e.op.empty()) e.op = op;
  return e;
}

static bool g_nan_guard = false;
static BackwardObserver g_observer = nullptr;
void set_nan_guard(bool on) { g_nan_guard = on; }
bool nan_guard() { return g_nan_guard; }
NanGuardScope::NanGuardScope(bool on) : prev(g_nan_guard) { g_nan_guard = on; }
NanGuardScope::~NanGuardScope() { g_nan_guard = prev; }
void set_backward_observer(BackwardObserver obs) { g_observer = obs; }
static std::string g_perturb_op;  // empty: off
static double g_perturb_factor = 1;
void set_backward_perturbation(const char* op, double factor) {
  g_perturb_op = op ? op : "";
  g_perturb_factor = factor;
}
static void perturb_output_grad(Node& n) {
  dispatch(n.dtype, [&](auto z) {
    using T = decltype(z);
    T* g = static_cast<T*>(n.scratch);
    for (int64_t i = 0, m = n.shape.numel(); i < m; ++i) g[i] = (T)(g[i] * g_perturb_factor);
  });
}

std::vector<std::string>& registered_ops() {
  static std::vector<std::string> ops;
  return ops;
}

Tensor make_result(const char* op, const Shape& shape, DType dtype, const Tensor* inputs,
                   int n_inputs, BackwardFn backward) {
  if (n_inputs > kMaxInputs) fail(std::string(op) + ": too many inputs for one node");
  Tensor out = empty(shape, dtype);
  Node* n = out.node();
  n->op = op;
  bool needs = false;
  if (grad_enabled())
    for (int i = 0; i < n_inputs; ++i) needs |= inputs[i].defined() && inputs[i].requires_grad();
  if (needs) {
    n->requires_grad = true;
    n->is_leaf = false;
    n->backward = backward;
    n->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; ++i) n->inputs[i] = inputs[i];
  }
  if (g_profile) open_ops().push_back({n, now_s()});
  return out;
}

Tensor make_result(const char* op, const Shape& shape, DType dtype,
                   std::initializer_list<Tensor> inputs, BackwardFn backward) {
  return make_result(op, shape, dtype, inputs.begin(), (int)inputs.size(), backward);
}

static std::string describe_inputs(const Node& n) {
  std::string s;
  for (int i = 0; i < n.n_inputs; ++i)
    if (n.inputs[i].defined()) s += (s.empty() ? "" : ", ") + n.inputs[i].shape().str();
  return s.empty() ? "none recorded" : s;
}

Tensor finish(Tensor out) {
  if (g_profile) {
    auto& s = open_ops();
    for (size_t k = s.size(); k-- > 0;)
      if (s[k].first == out.node()) {
        OpTime& e = profile_entry(out.node()->op);
        e.fwd_calls += 1, e.fwd_s += now_s() - s[k].second;
        s.resize(k);
        break;
      }
  }
  if (g_nan_guard) {
    Node* n = out.node();
    int64_t bad = first_non_finite(n->data, n->shape.numel(), n->dtype);
    if (bad >= 0)
      fail(std::string("NaN guard: forward of op '") + n->op + "' produced a non-finite value at flat index " +
           std::to_string(bad) + " of its output " + n->shape.str() + " (inputs: " + describe_inputs(*n) + ")");
  }
  return out;
}

// Nonzero during a grad() pass: only nodes with this need_epoch get a gradient buffer.
static thread_local uint32_t t_need_epoch = 0;

void* grad_buffer(const Tensor& t) {
  if (!t.defined()) return nullptr;
  Node* n = t.node();
  if (!n->requires_grad) return nullptr;
  if (t_need_epoch && n->need_epoch != t_need_epoch) return nullptr;
  if (!n->scratch) {
    n->scratch = pool_alloc(n->bytes());
    std::memset(n->scratch, 0, n->bytes());
  }
  return n->scratch;
}

Tensor detach(const Tensor& x) {
  Node* v = new_node();
  v->shape = x.shape();
  v->dtype = x.dtype();
  v->data = x.raw();
  v->owns_data = false;
  v->op = "detach";
  v->base = x;
  return Tensor(v);
}

// Reverse topological order of the nodes that need a gradient, reachable from `root`.
static std::vector<Node*>& topo_order(Node* root) {
  static thread_local std::vector<Node*> order;
  static thread_local std::vector<std::pair<Node*, int>> stack;
  static uint32_t epoch = 0;
  ++epoch;
  order.clear();
  stack.clear();
  root->visit_epoch = epoch;
  stack.push_back({root, 0});
  while (!stack.empty()) {
    auto& top = stack.back();
    Node* n = top.first;
    if (top.second < n->n_inputs) {
      Node* c = n->inputs[top.second++].node();
      if (c && c->requires_grad && c->visit_epoch != epoch) {
        c->visit_epoch = epoch;
        stack.push_back({c, 0});  // may invalidate `top`; not used after this
      }
    } else {
      order.push_back(n);  // post-order: inputs before the node
      stack.pop_back();
    }
  }
  return order;
}

// grad(): marks (need_epoch) the nodes of `order` (post-order) from which a node of `keep` is
// reachable. Gradients flow only through those, so the ops' backwards skip every other input
// (the products for a target's own weights when only d y / d h is asked for): grad()
// discards those gradients anyway. Returns the epoch.
static uint32_t mark_needed(const std::vector<Node*>& order, const std::vector<Tensor>& keep) {
  static uint32_t epoch = 0;
  if (++epoch == 0) ++epoch;
  for (Node* n : order) {
    bool need = false;
    for (const Tensor& t : keep) need = need || t.node() == n;
    for (int i = 0; i < n->n_inputs && !need; ++i) {
      const Node* c = n->inputs[i].node();
      need = c && c->requires_grad && c->need_epoch == epoch;
    }
    if (need) n->need_epoch = epoch;
  }
  return epoch;
}

// Sets t_need_epoch for one pass, also when an op's backward throws.
struct NeedScope {
  explicit NeedScope(uint32_t e) { t_need_epoch = e; }
  ~NeedScope() { t_need_epoch = 0; }
};

// Runs one pass. On return every node in the order has its gradient in `scratch` if it is a
// leaf or listed in `keep` (the caller then consumes them); other scratches are freed. With
// `keep`, only nodes a kept node is reachable from get a gradient (mark_needed).
static std::vector<Node*>& run_pass(const Tensor& output, const Tensor& grad_output,
                                    const std::vector<Tensor>* keep) {
  Node* root = output.node();
  if (!root) fail("backward: undefined output tensor");
  if (!root->requires_grad)
    fail(std::string("backward: output of '") + root->op +
         "' does not require a gradient (no input needed one, or it was computed under NoGradGuard)");
  std::vector<Node*>& order = topo_order(root);
  for (Node* n : order) {
    if (n->scratch) { pool_free(n->scratch, n->bytes()); n->scratch = nullptr; }
    if (n->graph_released)
      fail(std::string("backward: the graph through op '") + n->op + "' " + n->shape.str() +
           " was already freed by an earlier backward; pass retain_graph=true to the first one");
  }
  if (grad_output.defined()) {
    if (grad_output.shape() != output.shape())
      shape_error("backward", output.shape(), grad_output.shape(), "grad_output must match the output's shape");
    if (grad_output.dtype() != output.dtype()) fail("backward: grad_output dtype differs from the output's");
  } else if (root->shape.numel() != 1) {
    fail("backward: output " + root->shape.str() + " is not a scalar; pass grad_output");
  }
  NeedScope need(keep ? mark_needed(order, *keep) : 0);
  if (keep && root->need_epoch != t_need_epoch) return order;  // no requested input is reachable
  // Seed d output.
  void* seed = grad_buffer(output);
  if (grad_output.defined()) std::memcpy(seed, grad_output.raw(), root->bytes());
  else dispatch(root->dtype, [&](auto z) { static_cast<decltype(z)*>(seed)[0] = 1; });
  auto kept = [&](Node* n) {
    if (keep)
      for (const Tensor& t : *keep)
        if (t.node() == n) return true;
    return false;
  };
  for (size_t k = order.size(); k-- > 0;) {
    Node* n = order[k];
    if (n->is_leaf || !n->backward) continue;
    if (n->scratch) {
      if (g_observer) g_observer(n->op);
      if (!g_perturb_op.empty() && g_perturb_op == n->op) perturb_output_grad(*n);
      const double t0 = g_profile ? now_s() : 0;
      n->backward(*n);
      if (g_profile) {
        OpTime& e = profile_entry(n->op);
        e.bwd_calls += 1, e.bwd_s += now_s() - t0;
      }
      if (g_nan_guard)
        for (int i = 0; i < n->n_inputs; ++i) {
          Node* in = n->inputs[i].node();
          if (!in || !in->scratch) continue;
          int64_t bad = first_non_finite(in->scratch, in->shape.numel(), in->dtype);
          if (bad >= 0)
            fail(std::string("NaN guard: backward of op '") + n->op + "' produced a non-finite gradient for input " +
                 std::to_string(i) + " " + in->shape.str() + " at flat index " + std::to_string(bad) +
                 " (output " + n->shape.str() + ")");
        }
    }
    if (!kept(n)) { pool_free(n->scratch, n->bytes()); n->scratch = nullptr; }
  }
  return order;
}

static void release_graph(std::vector<Node*>& order) {
  for (Node* n : order) {
    if (n->is_leaf) continue;
    n->graph_released = true;
    n->backward = nullptr;
    for (int i = 0; i < n->n_inputs; ++i) n->inputs[i].reset();  // may free nodes in `order`
    n->saved[0].reset();                                            // only inputs-side nodes,
    n->saved[1].reset();                                            // all already visited
  }
}

void backward(const Tensor& output, const Tensor& grad_output, bool retain_graph) {
  std::vector<Node*>& order = run_pass(output, grad_output, nullptr);
  for (Node* n : order) {
    if (!n->is_leaf || !n->scratch) continue;
    if (!n->grad) {
      n->grad = n->scratch;  // first gradient: adopt the buffer
    } else {
      dispatch(n->dtype, [&](auto z) {
        using T = decltype(z);
        T* g = static_cast<T*>(n->grad);
        const T* s = static_cast<const T*>(n->scratch);
        for (int64_t i = 0, m = n->shape.numel(); i < m; ++i) g[i] += s[i];
      });
      pool_free(n->scratch, n->bytes());
    }
    n->scratch = nullptr;
  }
  if (!retain_graph) release_graph(order);
}

std::vector<Tensor> grad(const Tensor& output, const std::vector<Tensor>& wrt,
                         const Tensor& grad_output, bool retain_graph) {
  for (const Tensor& t : wrt)
    if (!t.defined() || !t.requires_grad())
      fail(std::string("grad: a requested input (op '") + (t.defined() ? t.op_name() : "undefined") +
           "') does not require a gradient");
  std::vector<Node*>& order = run_pass(output, grad_output, &wrt);
  std::vector<Tensor> result;
  result.reserve(wrt.size());
  for (const Tensor& t : wrt) {
    Node* n = t.node();
    Tensor g = zeros(n->shape, n->dtype);  // unreachable inputs get zeros
    if (n->scratch) std::memcpy(g.raw(), n->scratch, n->bytes());
    result.push_back(std::move(g));
  }
  for (Node* n : order)
    if (n->scratch) { pool_free(n->scratch, n->bytes()); n->scratch = nullptr; }
  if (!retain_graph) release_graph(order);
  return result;
}

}  // namespace ad
